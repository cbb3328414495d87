//! Max pooling (no padding, floor output size). Forward records the flat input index of each
//! window's maximum (first maximum wins); backward routes gradients there. On the GPU the backward
//! pass is a gather over the windows that contain each input pixel, so it needs no atomics.

use ndarray::{Array4, ArrayView4};
use rayon::prelude::*;

pub fn out_size(h: usize, kernel: usize, stride: usize) -> usize {
    (h - kernel) / stride + 1
}

/// Returns (y, argmax) where argmax holds the index within the image plane (iy * W + ix).
/// Parallel over (image, channel) planes.
pub fn cpu_forward(x: ArrayView4<f32>, kernel: usize, stride: usize) -> (Array4<f32>, Array4<u32>) {
    let (n, c, h, w) = x.dim();
    let (oh, ow) = (out_size(h, kernel, stride), out_size(w, kernel, stride));
    let x = x.as_standard_layout();
    let mut y = Array4::<f32>::zeros((n, c, oh, ow));
    let mut arg = Array4::<u32>::zeros((n, c, oh, ow));
    let planes = x.as_slice().expect("standard layout").par_chunks(h * w);
    let outs = y.as_slice_mut().expect("fresh").par_chunks_mut(oh * ow).zip(arg.as_slice_mut().expect("fresh").par_chunks_mut(oh * ow));
    planes.zip(outs).for_each(|(xp, (yp, ap))| {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best = f32::NEG_INFINITY;
                let mut at = 0;
                for iy in oy * stride..oy * stride + kernel {
                    for ix in ox * stride..ox * stride + kernel {
                        let v = xp[iy * w + ix];
                        if v > best {
                            best = v;
                            at = iy * w + ix;
                        }
                    }
                }
                yp[oy * ow + ox] = best;
                ap[oy * ow + ox] = at as u32;
            }
        }
    });
    (y, arg)
}

pub fn cpu_backward(dy: ArrayView4<f32>, arg: ArrayView4<u32>, input_hw: [usize; 2]) -> Array4<f32> {
    let (n, c, oh, ow) = dy.dim();
    let [h, w] = input_hw;
    let (dy, arg) = (dy.as_standard_layout(), arg.as_standard_layout());
    let mut dx = Array4::<f32>::zeros((n, c, h, w));
    let outs = dy.as_slice().expect("standard layout").par_chunks(oh * ow).zip(arg.as_slice().expect("standard layout").par_chunks(oh * ow));
    dx.as_slice_mut().expect("fresh").par_chunks_mut(h * w).zip(outs).for_each(|(dxp, (dyp, ap))| {
        for (&d, &a) in dyp.iter().zip(ap) {
            dxp[a as usize] += d;
        }
    });
    dx
}

use super::{Arg, Dispatch, Slot, Specialized, groups_1d};
use crate::gpu::Gpu;

const SLOTS: &[Slot] = &[Slot::Uniform, Slot::Storage, Slot::Storage, Slot::Storage];

/// Forward and backward, compiled per plane shape (maxpool.wgsl's overrides).
pub struct MaxPoolKernel {
    forward: Specialized,
    backward: Specialized,
}

impl MaxPoolKernel {
    pub fn new(_gpu: &Gpu) -> Self {
        let src = include_str!("maxpool.wgsl");
        Self { forward: Specialized::new("maxpool", src, "forward", SLOTS), backward: Specialized::new("maxpool_bwd", src, "backward", SLOTS) }
    }

    fn bind(kernel: &Specialized, gpu: &Gpu, n: usize, args: [Arg; 3], [_, _, h, w]: [usize; 4], kernel_size: usize, stride: usize) -> Dispatch {
        let (oh, ow) = (out_size(h, kernel_size, stride), out_size(w, kernel_size, stride));
        let shape = [("H", h), ("W", w), ("OH", oh), ("OW", ow), ("K", kernel_size), ("S", stride)].map(|(k, v)| (k, v as f64));
        let params = gpu.uniform("maxpool", &[n as u32]);
        let [a, b, c] = args;
        kernel.bind(gpu, &shape, &[(&params).into(), a, b, c], groups_1d(n))
    }

    /// x [N, C, H, W] → y, argmax (u32 buffer of y's size).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(&self, gpu: &Gpu, x: Arg, y: Arg, arg: Arg, shape: [usize; 4], kernel: usize, stride: usize) -> Dispatch {
        let [n, c, h, w] = shape;
        let outputs = n * c * out_size(h, kernel, stride) * out_size(w, kernel, stride);
        Self::bind(&self.forward, gpu, outputs, [x, y, arg], shape, kernel, stride)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn backward(&self, gpu: &Gpu, dy: Arg, arg: Arg, dx: Arg, shape: [usize; 4], kernel: usize, stride: usize) -> Dispatch {
        Self::bind(&self.backward, gpu, shape.iter().product(), [dx, dy, arg], shape, kernel, stride)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::check::{EXACT_ISH, assert_gpu_matches_cpu, check_finite_diff, random, run, test_gpu};

    fn check(shape: [usize; 4], kernel: usize, stride: usize) {
        let Some(gpu) = test_gpu() else { return };
        let [n, c, h, w] = shape;
        let x = Array4::from_shape_vec((n, c, h, w), random(n * c * h * w, 11)).unwrap();
        let (y, arg) = cpu_forward(x.view(), kernel, stride);
        let dy = Array4::from_shape_vec(y.dim(), random(y.len(), 12)).unwrap();
        let k = MaxPoolKernel::new(&gpu);
        let (gx, gdy) = (gpu.upload("x", x.as_slice().unwrap()), gpu.upload("dy", dy.as_slice().unwrap()));
        let (gy, garg, gdx) = (gpu.zeros("y", y.len() as u64 * 4), gpu.zeros("arg", y.len() as u64 * 4), gpu.zeros("dx", x.len() as u64 * 4));
        run(&gpu, &[
            &k.forward(&gpu, (&gx).into(), (&gy).into(), (&garg).into(), shape, kernel, stride),
            &k.backward(&gpu, (&gdy).into(), (&garg).into(), (&gdx).into(), shape, kernel, stride),
        ]);
        assert_gpu_matches_cpu("maxpool", &gpu.read_f32(&gy), y.as_slice().unwrap(), EXACT_ISH);
        assert_eq!(gpu.read_u32(&garg), arg.as_slice().unwrap(), "argmax");
        let dx = cpu_backward(dy.view(), arg.view(), [h, w]);
        assert_gpu_matches_cpu("maxpool_bwd", &gpu.read_f32(&gdx), dx.as_slice().unwrap(), EXACT_ISH);
    }

    #[test]
    fn matches_cpu_non_overlapping_and_odd_sizes() {
        check([3, 5, 29, 27], 2, 2);
    }

    #[test]
    fn matches_cpu_overlapping_windows() {
        check([2, 3, 11, 13], 3, 2);
    }

    #[test]
    fn cpu_backward_matches_finite_differences() {
        let (n, c, h, w) = (2, 2, 6, 6);
        // Distinct values at least 0.05 apart, so a ±0.01 probe never changes a window's argmax.
        let keys = random(n * c * h * w, 13);
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
        let mut x = vec![0.0f32; keys.len()];
        for (rank, &i) in order.iter().enumerate() {
            x[i] = rank as f32 * 0.05 - 3.0;
        }
        let r = random(n * c * 9, 14);
        let loss = |v: &[f32]| {
            let (y, _) = cpu_forward(Array4::from_shape_vec((n, c, h, w), v.to_vec()).unwrap().view(), 2, 2);
            y.iter().zip(&r).map(|(a, b)| (a * b) as f64).sum()
        };
        let (_, arg) = cpu_forward(Array4::from_shape_vec((n, c, h, w), x.clone()).unwrap().view(), 2, 2);
        let dy = Array4::from_shape_vec((n, c, 3, 3), r.clone()).unwrap();
        let g = cpu_backward(dy.view(), arg.view(), [h, w]);
        check_finite_diff("maxpool", &x, g.as_slice().unwrap(), 30, loss);
    }
}
