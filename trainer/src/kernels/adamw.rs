//! AdamW (decoupled weight decay, Loshchilov & Hutter) over one flat parameter array.
//! `decay` is per element so one dispatch updates every tensor (biases and batch-norm affine
//! parameters get 0).

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWParams {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// 1-based step count, for bias correction.
    pub step: u32,
}

/// The per-element update; the CPU optimiser and the GPU twin test both call this.
#[inline]
pub fn update(p: &AdamWParams, w: &mut f32, g: f32, m: &mut f32, v: &mut f32, decay: f32) {
    *m = p.beta1 * *m + (1.0 - p.beta1) * g;
    *v = p.beta2 * *v + (1.0 - p.beta2) * g * g;
    let mhat = *m / (1.0 - p.beta1.powi(p.step as i32));
    let vhat = *v / (1.0 - p.beta2.powi(p.step as i32));
    *w -= p.lr * (mhat / (vhat.sqrt() + p.eps) + p.weight_decay * decay * *w);
}

pub fn cpu_step(p: &AdamWParams, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], decay: &[f32]) {
    for i in 0..w.len() {
        update(p, &mut w[i], g[i], &mut m[i], &mut v[i], decay[i]);
    }
}

use super::{Arg, Dispatch, Kernel, Slot, f, groups_1d};
use crate::gpu::Gpu;

const SLOTS: &[Slot] = &[Slot::Uniform, Slot::Storage, Slot::Storage, Slot::Storage, Slot::Storage, Slot::Storage, Slot::Storage];

pub struct AdamWKernel {
    step: Kernel,
}

/// What the host writes into the `hyper` buffer before each step: [lr, 1 − β1^t, 1 − β2^t].
pub fn hyper(p: &AdamWParams) -> [f32; 3] {
    [p.lr, 1.0 - p.beta1.powi(p.step as i32), 1.0 - p.beta2.powi(p.step as i32)]
}

impl AdamWKernel {
    pub fn new(gpu: &Gpu) -> Self {
        Self { step: Kernel::new(gpu, "adamw", include_str!("adamw.wgsl"), "step", SLOTS) }
    }

    /// `lr` and `step` come from `hyper` at run time; the rest of `p` is fixed here.
    #[allow(clippy::too_many_arguments)]
    pub fn step(&self, gpu: &Gpu, p: &AdamWParams, w: Arg, g: Arg, m: Arg, v: Arg, decay: Arg, hyper: Arg, n: usize) -> Dispatch {
        let params = gpu.uniform("adamw", &[n as u32, f(p.beta1), f(p.beta2), f(p.eps), f(p.weight_decay)]);
        self.step.bind(gpu, &[(&params).into(), w, g, m, v, decay, hyper], groups_1d(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::check::{TRANSCENDENTAL, assert_gpu_matches_cpu, random, run, test_gpu};

    #[test]
    fn two_steps_match_cpu() {
        let Some(gpu) = test_gpu() else { return };
        let n = 777;
        let (mut w, g1, g2) = (random(n, 18), random(n, 19), random(n, 20));
        let decay: Vec<f32> = (0..n).map(|i| (i % 3 == 0) as u32 as f32).collect();
        let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
        let kern = AdamWKernel::new(&gpu);
        let (gw, gg, gm, gv, gdecay) = (gpu.upload("w", &w), gpu.upload("g", &g1), gpu.zeros("m", n as u64 * 4), gpu.zeros("v", n as u64 * 4), gpu.upload("d", &decay));
        let gh = gpu.zeros("hyper", 16);
        for (t, g) in [(1, &g1), (2, &g2)] {
            let p = AdamWParams { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.05, step: t };
            gpu.queue.write_buffer(&gg, 0, bytemuck::cast_slice(g));
            gpu.queue.write_buffer(&gh, 0, bytemuck::cast_slice(&hyper(&p)));
            run(&gpu, &[&kern.step(&gpu, &p, (&gw).into(), (&gg).into(), (&gm).into(), (&gv).into(), (&gdecay).into(), (&gh).into(), n)]);
            cpu_step(&p, &mut w, g, &mut m, &mut v, &decay);
        }
        assert_gpu_matches_cpu("adamw_w", &gpu.read_f32(&gw), &w, TRANSCENDENTAL);
        assert_gpu_matches_cpu("adamw_v", &gpu.read_f32(&gv), &v, TRANSCENDENTAL);
    }
}
