//! Inverted dropout: keep with probability 1 − p and scale by 1/(1 − p). The mask comes from the
//! counter RNG (seed, element index), so backward recomputes it instead of storing it.

use ndarray::{ArrayD, ArrayViewD, Zip};

use super::rng;

pub fn keep_scale(seed: u32, index: usize, p: f32) -> f32 {
    if rng::uniform(seed, index as u32) < p { 0.0 } else { 1.0 / (1.0 - p) }
}

/// Forward and backward are the same product with the mask.
pub fn cpu_apply(x: ArrayViewD<f32>, p: f32, seed: u32) -> ArrayD<f32> {
    let x = x.as_standard_layout();
    let mut y = x.to_owned();
    Zip::indexed(y.as_slice_mut().unwrap()).par_for_each(|i, v| *v *= keep_scale(seed, i, p));
    y
}

use super::{Arg, Dispatch, Kernel, Slot, f, groups_1d};
use crate::gpu::Gpu;

const SLOTS: &[Slot] = &[Slot::Uniform, Slot::Storage, Slot::Storage, Slot::Storage];

pub struct DropoutKernel {
    apply: Kernel,
}

impl DropoutKernel {
    pub fn new(gpu: &Gpu) -> Self {
        Self { apply: Kernel::new(gpu, "dropout", concat!(include_str!("rng.wgsl"), include_str!("dropout.wgsl")), "apply", SLOTS) }
    }

    /// out = a · mask; the seed is `seeds[slot]` (a u32 buffer the host rewrites every step).
    #[allow(clippy::too_many_arguments)]
    pub fn apply(&self, gpu: &Gpu, a: Arg, out: Arg, seeds: Arg, slot: usize, n: usize, p: f32) -> Dispatch {
        let params = gpu.uniform("dropout", &[n as u32, f(p), slot as u32]);
        self.apply.bind(gpu, &[(&params).into(), a, out, seeds], groups_1d(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::check::{EXACT_ISH, assert_gpu_matches_cpu, random, run, test_gpu};
    use ndarray::{ArrayD, IxDyn};

    #[test]
    fn gpu_mask_matches_cpu_and_rate_is_p() {
        let Some(gpu) = test_gpu() else { return };
        let n = 10_007;
        let x = ArrayD::from_shape_vec(IxDyn(&[n]), random(n, 15)).unwrap();
        let seeds = [0u32, 0, 1234, 99];
        let (gx, gy, gs) = (gpu.upload("x", x.as_slice().unwrap()), gpu.zeros("y", n as u64 * 4), gpu.upload("seeds", &seeds));
        run(&gpu, &[&DropoutKernel::new(&gpu).apply(&gpu, (&gx).into(), (&gy).into(), (&gs).into(), 2, n, 0.3)]);
        let cpu = cpu_apply(x.view(), 0.3, 1234);
        assert_gpu_matches_cpu("dropout", &gpu.read_f32(&gy), cpu.as_slice().unwrap(), EXACT_ISH);
        let dropped = cpu.iter().filter(|&&v| v == 0.0).count() as f32 / n as f32;
        assert!((dropped - 0.3).abs() < 0.02, "drop rate {dropped}");
    }
}
