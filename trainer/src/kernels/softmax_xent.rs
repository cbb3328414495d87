//! Fused softmax + cross-entropy with label smoothing, forward and backward in one pass.
//! Target distribution: (1 − ε)·onehot + ε/K. Gradient of the batch-mean loss: (softmax − t)/N.
//! The GPU version also reduces loss and correct-count over the batch into a small accumulator,
//! so a training step reads back two numbers.

use ndarray::{Array1, Array2, ArrayView2};

pub struct XentOut {
    /// Per-sample loss.
    pub loss: Array1<f32>,
    /// 1.0 where argmax(logits) == label.
    pub correct: Array1<f32>,
    /// d(mean loss)/d logits.
    pub dlogits: Array2<f32>,
}

pub fn cpu_forward_backward(logits: ArrayView2<f32>, labels: &[u32], smoothing: f32) -> XentOut {
    let (n, k) = logits.dim();
    let mut loss = Array1::zeros(n);
    let mut correct = Array1::zeros(n);
    let mut dlogits = Array2::zeros((n, k));
    for (i, row) in logits.outer_iter().enumerate() {
        let label = labels[i] as usize;
        let (mut best, mut argmax) = (f32::NEG_INFINITY, 0);
        for (j, &v) in row.iter().enumerate() {
            if v > best {
                best = v;
                argmax = j;
            }
        }
        let sum: f32 = row.iter().map(|&v| (v - best).exp()).sum();
        let log_z = best + sum.ln();
        let mut l = 0.0;
        for (j, &v) in row.iter().enumerate() {
            let t = smoothing / k as f32 + if j == label { 1.0 - smoothing } else { 0.0 };
            l -= t * (v - log_z);
            dlogits[[i, j]] = ((v - log_z).exp() - t) / n as f32;
        }
        loss[i] = l;
        correct[i] = if argmax == label { 1.0 } else { 0.0 };
    }
    XentOut { loss, correct, dlogits }
}

use super::{Arg, Dispatch, Kernel, Slot, f, groups_1d};
use crate::gpu::Gpu;

const SLOTS: &[Slot] = &[Slot::Uniform, Slot::Storage, Slot::Storage, Slot::Storage, Slot::Storage, Slot::Storage];

pub struct XentKernel {
    forward_backward: Kernel,
    reduce: Kernel,
}

impl XentKernel {
    pub fn new(gpu: &Gpu) -> Self {
        let src = include_str!("softmax_xent.wgsl");
        Self {
            forward_backward: Kernel::new(gpu, "xent", src, "forward_backward", SLOTS),
            reduce: Kernel::new(gpu, "xent_reduce", src, "reduce", SLOTS),
        }
    }

    /// Two dispatches: per-sample loss/grad, then the batch sums added into `accum` [loss, correct].
    /// `per_sample` is scratch of 2·n floats.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_backward(
        &self,
        gpu: &Gpu,
        logits: Arg,
        labels: Arg,
        dlogits: Arg,
        per_sample: Arg,
        accum: Arg,
        [n, k]: [usize; 2],
        smoothing: f32,
    ) -> [Dispatch; 2] {
        let params = gpu.uniform("xent", &[n as u32, k as u32, f(smoothing)]);
        let args = [(&params).into(), logits, labels, dlogits, per_sample, accum];
        [self.forward_backward.bind(gpu, &args, groups_1d(n)), self.reduce.bind(gpu, &args, [1, 1, 1])]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::check::{REDUCTION, TRANSCENDENTAL, assert_gpu_matches_cpu, check_finite_diff, random, run, test_gpu};

    #[test]
    fn matches_cpu_and_accumulates() {
        let Some(gpu) = test_gpu() else { return };
        let (n, k) = (300, 49);
        let logits: Vec<f32> = random(n * k, 16).iter().map(|v| v * 4.0).collect();
        let labels: Vec<u32> = (0..n as u32).map(|i| (i * 7) % k as u32).collect();
        let kern = XentKernel::new(&gpu);
        let (gl, glab) = (gpu.upload("logits", &logits), gpu.upload("labels", &labels));
        let (gd, gps, gacc) = (gpu.zeros("d", (n * k * 4) as u64), gpu.zeros("ps", (n * 8) as u64), gpu.upload("acc", &[1.0f32, 2.0]));
        let [a, b] = kern.forward_backward(&gpu, (&gl).into(), (&glab).into(), (&gd).into(), (&gps).into(), (&gacc).into(), [n, k], 0.1);
        run(&gpu, &[&a, &b]);
        let cpu = cpu_forward_backward(ndarray::ArrayView2::from_shape((n, k), &logits).unwrap(), &labels, 0.1);
        assert_gpu_matches_cpu("xent_grad", &gpu.read_f32(&gd), cpu.dlogits.as_slice().unwrap(), TRANSCENDENTAL);
        let ps = gpu.read_f32(&gps);
        let loss: Vec<f32> = ps.iter().step_by(2).copied().collect();
        assert_gpu_matches_cpu("xent_loss", &loss, cpu.loss.as_slice().unwrap(), TRANSCENDENTAL);
        let acc = gpu.read_f32(&gacc);
        let want = [1.0 + cpu.loss.sum(), 2.0 + cpu.correct.sum()];
        assert_gpu_matches_cpu("xent_accum", &acc, &want, REDUCTION);
    }

    #[test]
    fn cpu_gradient_matches_finite_differences() {
        let (n, k) = (3, 10);
        let x = random(n * k, 17);
        let labels = [1u32, 4, 9];
        let loss = |v: &[f32]| {
            let out = cpu_forward_backward(ndarray::ArrayView2::from_shape((n, k), v).unwrap(), &labels, 0.1);
            out.loss.iter().map(|&l| l as f64).sum::<f64>() / n as f64
        };
        let out = cpu_forward_backward(ndarray::ArrayView2::from_shape((n, k), &x).unwrap(), &labels, 0.1);
        check_finite_diff("xent", &x, out.dlogits.as_slice().unwrap(), 30, loss);
    }
}
