//! ReLU. The backward pass masks with the forward output (y > 0), so only y is kept.

use ndarray::{ArrayD, ArrayViewD};
use rayon::prelude::*;

/// Elements per parallel task: big enough that the split costs nothing next to the loop.
const GRAIN: usize = 1 << 15;

pub fn cpu_forward(x: ArrayViewD<f32>) -> ArrayD<f32> {
    let mut y = x.as_standard_layout().into_owned();
    y.as_slice_mut().expect("standard layout").par_chunks_mut(GRAIN).for_each(|c| c.iter_mut().for_each(|v| *v = v.max(0.0)));
    y
}

pub fn cpu_backward(y: ArrayViewD<f32>, dy: ArrayViewD<f32>) -> ArrayD<f32> {
    let y = y.as_standard_layout();
    let mut dx = dy.as_standard_layout().into_owned();
    let ys = y.as_slice().expect("standard layout").par_chunks(GRAIN);
    dx.as_slice_mut().expect("standard layout").par_chunks_mut(GRAIN).zip(ys).for_each(|(d, y)| {
        d.iter_mut().zip(y).for_each(|(d, &y)| if y <= 0.0 { *d = 0.0 });
    });
    dx
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
    use crate::kernels::check::{EXACT_ISH, assert_gpu_matches_cpu, random, run, test_gpu};
    use ndarray::{ArrayD, IxDyn};

    #[test]
    fn forward_and_backward_match_cpu() {
        let Some(gpu) = test_gpu() else { return };
        let n = 3 * 5 * 7 * 11; // not a multiple of the workgroup size
        let x = ArrayD::from_shape_vec(IxDyn(&[n]), random(n, 3)).unwrap();
        let dy = ArrayD::from_shape_vec(IxDyn(&[n]), random(n, 4)).unwrap();
        let k = ReluKernel::new(&gpu);
        let (gx, gdy) = (gpu.upload("x", x.as_slice().unwrap()), gpu.upload("dy", dy.as_slice().unwrap()));
        let (gy, gdx) = (gpu.zeros("y", n as u64 * 4), gpu.zeros("dx", n as u64 * 4));
        run(&gpu, &[&k.forward(&gpu, (&gx).into(), (&gy).into(), n), &k.backward(&gpu, (&gy).into(), (&gdy).into(), (&gdx).into(), n)]);
        let y = cpu_forward(x.view());
        assert_gpu_matches_cpu("relu", &gpu.read_f32(&gy), y.as_slice().unwrap(), EXACT_ISH);
        let dx = cpu_backward(y.view(), dy.view());
        assert_gpu_matches_cpu("relu_bwd", &gpu.read_f32(&gdx), dx.as_slice().unwrap(), EXACT_ISH);
    }
}
