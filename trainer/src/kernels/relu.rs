//! ReLU. The backward pass masks with the forward output (y > 0), so only y is kept.

use ndarray::{ArrayD, ArrayViewD, Zip};

pub fn cpu_forward(x: ArrayViewD<f32>) -> ArrayD<f32> {
    x.mapv(|v| v.max(0.0))
}

pub fn cpu_backward(y: ArrayViewD<f32>, dy: ArrayViewD<f32>) -> ArrayD<f32> {
    Zip::from(&y).and(&dy).map_collect(|&y, &d| if y > 0.0 { d } else { 0.0 })
}

use super::{Arg, Dispatch, Kernel, Slot, groups_1d};
use crate::gpu::Gpu;

const SLOTS: &[Slot] = &[Slot::Uniform, Slot::Storage, Slot::Storage, Slot::Storage];

pub struct ReluKernel {
    forward: Kernel,
    backward: Kernel,
}

impl ReluKernel {
    pub fn new(gpu: &Gpu) -> Self {
        let src = include_str!("relu.wgsl");
        Self { forward: Kernel::new(gpu, "relu", src, "forward", SLOTS), backward: Kernel::new(gpu, "relu_bwd", src, "backward", SLOTS) }
    }

    pub fn forward(&self, gpu: &Gpu, x: Arg, y: Arg, n: usize) -> Dispatch {
        let params = gpu.uniform("relu", &[n as u32]);
        self.forward.bind(gpu, &[(&params).into(), x, x, y], groups_1d(n))
    }

    pub fn backward(&self, gpu: &Gpu, y: Arg, dy: Arg, dx: Arg, n: usize) -> Dispatch {
        let params = gpu.uniform("relu_bwd", &[n as u32]);
        self.backward.bind(gpu, &[(&params).into(), y, dy, dx], groups_1d(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::check::{EXACT_ISH, assert_gpu_matches_cpu, random};
    use ndarray::{ArrayD, IxDyn};

    #[test]
    fn forward_and_backward_match_cpu() {
        let Some(gpu) = crate::gpu::test_gpu() else { return };
        let n = 3 * 5 * 7 * 11; // not a multiple of the workgroup size
        let x = ArrayD::from_shape_vec(IxDyn(&[n]), random(n, 3)).unwrap();
        let dy = ArrayD::from_shape_vec(IxDyn(&[n]), random(n, 4)).unwrap();
        let k = ReluKernel::new(&gpu);
        let (gx, gdy) = (gpu.upload("x", x.as_slice().unwrap()), gpu.upload("dy", dy.as_slice().unwrap()));
        let (gy, gdx) = (gpu.zeros("y", n as u64 * 4), gpu.zeros("dx", n as u64 * 4));
        gpu.run(&[&k.forward(&gpu, (&gx).into(), (&gy).into(), n), &k.backward(&gpu, (&gy).into(), (&gdy).into(), (&gdx).into(), n)]);
        let y = cpu_forward(x.view());
        assert_gpu_matches_cpu("relu", &gpu.read_f32(&gy), y.as_slice().unwrap(), EXACT_ISH);
        let dx = cpu_backward(y.view(), dy.view());
        assert_gpu_matches_cpu("relu_bwd", &gpu.read_f32(&gdx), dx.as_slice().unwrap(), EXACT_ISH);
    }
}
