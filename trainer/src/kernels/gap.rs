//! Global average pooling [N, C, H, W] → [N, C] and its backward (spread dy / (H·W)).

use ndarray::{Array2, Array4, ArrayView2, ArrayView4, Axis};

pub fn cpu_forward(x: ArrayView4<f32>) -> Array2<f32> {
    let (_, _, h, w) = x.dim();
    x.sum_axis(Axis(3)).sum_axis(Axis(2)) / (h * w) as f32
}

pub fn cpu_backward(dy: ArrayView2<f32>, hw: [usize; 2]) -> Array4<f32> {
    let (n, c) = dy.dim();
    let scale = 1.0 / (hw[0] * hw[1]) as f32;
    let d = dy.mapv(|v| v * scale).into_shape_with_order((n, c, 1, 1)).unwrap();
    d.broadcast((n, c, hw[0], hw[1])).unwrap().to_owned()
}

use super::{Arg, Dispatch, Kernel, Slot, groups_1d};
use crate::gpu::Gpu;

const SLOTS: &[Slot] = &[Slot::Uniform, Slot::Storage, Slot::Storage];

pub struct GapKernel {
    forward: Kernel,
    backward: Kernel,
}

impl GapKernel {
    pub fn new(gpu: &Gpu) -> Self {
        let src = include_str!("gap.wgsl");
        Self { forward: Kernel::new(gpu, "gap", src, "forward", SLOTS), backward: Kernel::new(gpu, "gap_bwd", src, "backward", SLOTS) }
    }

    /// x [N·C, hw] → y [N·C].
    pub fn forward(&self, gpu: &Gpu, x: Arg, y: Arg, nc: usize, hw: usize) -> Dispatch {
        let params = gpu.uniform("gap", &[nc as u32, hw as u32]);
        self.forward.bind(gpu, &[(&params).into(), x, y], groups_1d(nc))
    }

    pub fn backward(&self, gpu: &Gpu, dy: Arg, dx: Arg, nc: usize, hw: usize) -> Dispatch {
        let params = gpu.uniform("gap_bwd", &[(nc * hw) as u32, hw as u32]);
        self.backward.bind(gpu, &[(&params).into(), dx, dy], groups_1d(nc * hw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::check::{REDUCTION, assert_gpu_matches_cpu, check_finite_diff, random, run, test_gpu};
    use ndarray::{Array2, Array4};

    #[test]
    fn forward_and_backward_match_cpu() {
        let Some(gpu) = test_gpu() else { return };
        let (n, c, h, w) = (9, 37, 5, 7);
        let x = Array4::from_shape_vec((n, c, h, w), random(n * c * h * w, 7)).unwrap();
        let dy = Array2::from_shape_vec((n, c), random(n * c, 8)).unwrap();
        let k = GapKernel::new(&gpu);
        let (gx, gdy) = (gpu.upload("x", x.as_slice().unwrap()), gpu.upload("dy", dy.as_slice().unwrap()));
        let (gy, gdx) = (gpu.zeros("y", (n * c * 4) as u64), gpu.zeros("dx", (n * c * h * w * 4) as u64));
        run(&gpu, &[&k.forward(&gpu, (&gx).into(), (&gy).into(), n * c, h * w), &k.backward(&gpu, (&gdy).into(), (&gdx).into(), n * c, h * w)]);
        assert_gpu_matches_cpu("gap", &gpu.read_f32(&gy), cpu_forward(x.view()).as_slice().unwrap(), REDUCTION);
        assert_gpu_matches_cpu("gap_bwd", &gpu.read_f32(&gdx), cpu_backward(dy.view(), [h, w]).as_slice().unwrap(), REDUCTION);
    }

    #[test]
    fn cpu_backward_matches_finite_differences() {
        let (n, c, h, w) = (2, 3, 4, 5);
        let x = random(n * c * h * w, 9);
        let r = Array2::from_shape_vec((n, c), random(n * c, 10)).unwrap();
        let loss = |v: &[f32]| {
            let y = cpu_forward(Array4::from_shape_vec((n, c, h, w), v.to_vec()).unwrap().view());
            (&y * &r).sum() as f64
        };
        let g = cpu_backward(r.view(), [h, w]);
        check_finite_diff("gap", &x, g.as_slice().unwrap(), 20, loss);
    }
}
