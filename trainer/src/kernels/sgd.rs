//! SGD with (PyTorch-style) momentum and L2 weight decay folded into the gradient.

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdParams {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
}

#[inline]
pub fn update(p: &SgdParams, w: &mut f32, g: f32, velocity: &mut f32, decay: f32) {
    let g = g + p.weight_decay * decay * *w;
    *velocity = p.momentum * *velocity + g;
    *w -= p.lr * *velocity;
}

pub fn cpu_step(p: &SgdParams, w: &mut [f32], g: &[f32], velocity: &mut [f32], decay: &[f32]) {
    for i in 0..w.len() {
        update(p, &mut w[i], g[i], &mut velocity[i], decay[i]);
    }
}

use super::{Arg, Dispatch, Kernel, Slot, f, groups_1d};
use crate::gpu::Gpu;

const SLOTS: &[Slot] = &[Slot::Uniform, Slot::Storage, Slot::Storage, Slot::Storage, Slot::Storage, Slot::Storage];

pub struct SgdKernel {
    step: Kernel,
}

impl SgdKernel {
    pub fn new(gpu: &Gpu) -> Self {
        Self { step: Kernel::new(gpu, "sgd", include_str!("sgd.wgsl"), "step", SLOTS) }
    }

    /// `lr` is read from `hyper[0]` at run time.
    #[allow(clippy::too_many_arguments)]
    pub fn step(&self, gpu: &Gpu, p: &SgdParams, w: Arg, g: Arg, velocity: Arg, decay: Arg, hyper: Arg, n: usize) -> Dispatch {
        let params = gpu.uniform("sgd", &[n as u32, f(p.momentum), f(p.weight_decay)]);
        self.step.bind(gpu, &[(&params).into(), w, g, velocity, decay, hyper], groups_1d(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::check::{EXACT_ISH, assert_gpu_matches_cpu, random, run, test_gpu};

    #[test]
    fn two_steps_match_cpu() {
        let Some(gpu) = test_gpu() else { return };
        let n = 1025;
        let (mut w, g) = (random(n, 21), random(n, 22));
        let decay = vec![1.0; n];
        let mut vel = vec![0.0; n];
        let p = SgdParams { lr: 0.1, momentum: 0.9, weight_decay: 5e-4 };
        let kern = SgdKernel::new(&gpu);
        let (gw, gg, gvel, gd, gh) = (gpu.upload("w", &w), gpu.upload("g", &g), gpu.zeros("v", n as u64 * 4), gpu.upload("d", &decay), gpu.upload("h", &[p.lr]));
        let d = kern.step(&gpu, &p, (&gw).into(), (&gg).into(), (&gvel).into(), (&gd).into(), (&gh).into(), n);
        run(&gpu, &[&d, &d]);
        cpu_step(&p, &mut w, &g, &mut vel, &decay);
        cpu_step(&p, &mut w, &g, &mut vel, &decay);
        assert_gpu_matches_cpu("sgd", &gpu.read_f32(&gw), &w, EXACT_ISH);
    }
}
