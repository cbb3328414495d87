//! Element-wise sum, used where a residual block joins its branches (forward) and where the
//! block's input gradient joins both branches' (backward).

use super::{Arg, Dispatch, Kernel, Slot, groups_1d};
use crate::gpu::Gpu;

const SLOTS: &[Slot] = &[Slot::Uniform, Slot::Storage, Slot::Storage, Slot::Storage];

pub struct AddKernel {
    add: Kernel,
}

impl AddKernel {
    pub fn new(gpu: &Gpu) -> Self {
        Self { add: Kernel::new(gpu, "add", include_str!("elementwise.wgsl"), "add", SLOTS) }
    }

    /// out = a + b over `n` elements (out may alias a or b).
    pub fn add(&self, gpu: &Gpu, a: Arg, b: Arg, out: Arg, n: usize) -> Dispatch {
        let params = gpu.uniform("add", &[n as u32]);
        self.add.bind(gpu, &[(&params).into(), a, b, out], groups_1d(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::check::{EXACT_ISH, assert_gpu_matches_cpu, random, run, test_gpu};

    #[test]
    fn add_matches_cpu() {
        let Some(gpu) = test_gpu() else { return };
        let n = 1000;
        let (a, b) = (random(n, 1), random(n, 2));
        let (ga, gb, out) = (gpu.upload("a", &a), gpu.upload("b", &b), gpu.zeros("out", n as u64 * 4));
        run(&gpu, &[&AddKernel::new(&gpu).add(&gpu, (&ga).into(), (&gb).into(), (&out).into(), n)]);
        let cpu: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert_gpu_matches_cpu("add", &gpu.read_f32(&out), &cpu, EXACT_ISH);
    }
}
