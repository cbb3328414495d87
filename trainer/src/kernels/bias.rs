//! Per-channel bias of linear layers (convolutions fuse theirs into conv2d.wgsl): add (in place)
//! and its gradient (a per-channel sum over batch and space). The CPU twins live in
//! `conv2d::cpu_*` / the linear layer; this file checks the GPU against plain sums.

use super::{Arg, Dispatch, Kernel, Slot, groups_1d};
use crate::gpu::Gpu;

const SLOTS: &[Slot] = &[Slot::Uniform, Slot::Storage, Slot::Storage];

pub struct BiasKernel {
    add: Kernel,
    backward: Kernel,
}

impl BiasKernel {
    pub fn new(gpu: &Gpu) -> Self {
        let src = include_str!("bias.wgsl");
        Self { add: Kernel::new(gpu, "bias", src, "add", SLOTS), backward: Kernel::new(gpu, "bias_bwd", src, "backward", SLOTS) }
    }

    /// y[batch, c, inner] += bias[c].
    pub fn add(&self, gpu: &Gpu, y: Arg, bias: Arg, [batch, c, inner]: [usize; 3]) -> Dispatch {
        let n = batch * c * inner;
        let params = gpu.uniform("bias", &[n as u32, c as u32, inner as u32, batch as u32]);
        self.add.bind(gpu, &[(&params).into(), y, bias], groups_1d(n))
    }

    /// db[c] = Σ dy[:, c, :].
    pub fn backward(&self, gpu: &Gpu, dy: Arg, db: Arg, [batch, c, inner]: [usize; 3]) -> Dispatch {
        let params = gpu.uniform("bias_bwd", &[(batch * c * inner) as u32, c as u32, inner as u32, batch as u32]);
        self.backward.bind(gpu, &[(&params).into(), dy, db], [c as u32, 1, 1])
    }
}

/// CPU twin of `add`.
pub fn cpu_add(y: &mut [f32], bias: &[f32], [_, c, inner]: [usize; 3]) {
    for (i, v) in y.iter_mut().enumerate() {
        *v += bias[(i / inner) % c];
    }
}

/// CPU twin of `backward`.
pub fn cpu_backward(dy: &[f32], [batch, c, inner]: [usize; 3]) -> Vec<f32> {
    (0..c).map(|ci| (0..batch).map(|n| dy[(n * c + ci) * inner..][..inner].iter().sum::<f32>()).sum()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::check::{EXACT_ISH, REDUCTION, assert_gpu_matches_cpu, random, run, test_gpu};

    #[test]
    fn add_and_backward_match_cpu() {
        let Some(gpu) = test_gpu() else { return };
        let shape = [5, 7, 13 * 13]; // batch·inner spans several workgroups, not a multiple of 256
        let n = shape.iter().product::<usize>();
        let (y, b) = (random(n, 5), random(7, 6));
        let k = BiasKernel::new(&gpu);
        let (gy, gb, gdb) = (gpu.upload("y", &y), gpu.upload("b", &b), gpu.zeros("db", 7 * 4));
        run(&gpu, &[&k.add(&gpu, (&gy).into(), (&gb).into(), shape), &k.backward(&gpu, (&gy).into(), (&gdb).into(), shape)]);
        let mut cpu_y = y.clone();
        cpu_add(&mut cpu_y, &b, shape);
        assert_gpu_matches_cpu("bias_add", &gpu.read_f32(&gy), &cpu_y, EXACT_ISH);
        assert_gpu_matches_cpu("bias_bwd", &gpu.read_f32(&gdb), &cpu_backward(&cpu_y, shape), REDUCTION);
    }
}
