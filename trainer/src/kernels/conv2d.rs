//! 2-D convolution (NCHW, square kernel, zero padding) as im2col + matmul.
//! Forward: y[n] = W[Cout, C·k·k] · cols[n] + b. Backward-weights: dW = Σn dY[n] · cols[n]ᵀ.
//! Backward-data: dcols[n] = Wᵀ · dY[n], then col2im (a gather, so no atomics on the GPU).
//! `conv2d.wgsl` holds im2col / col2im; the products run on `matmul.wgsl`.

use ndarray::{Array1, Array2, Array3, Array4, ArrayView1, ArrayView2, ArrayView3, ArrayView4, Axis, Zip};
use rayon::prelude::*;

/// Output side length for input side `h`.
pub fn out_size(h: usize, kernel: usize, stride: usize, pad: usize) -> usize {
    (h + 2 * pad - kernel) / stride + 1
}

/// One image [C, H, W] → columns [C·k·k, OH·OW].
pub fn im2col(x: ArrayView3<f32>, kernel: usize, stride: usize, pad: usize) -> Array2<f32> {
    let (c, h, w) = x.dim();
    let (oh, ow) = (out_size(h, kernel, stride, pad), out_size(w, kernel, stride, pad));
    let mut cols = Array2::<f32>::zeros((c * kernel * kernel, oh * ow));
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    for (row, mut out) in cols.outer_iter_mut().enumerate() {
        let (ci, ky, kx) = (row / (kernel * kernel), (row / kernel) % kernel, row % kernel);
        let out = out.as_slice_mut().expect("contiguous row");
        for oy in 0..oh {
            let iy = (oy * stride + ky) as isize - pad as isize;
            if iy < 0 || iy >= h as isize {
                continue;
            }
            let src = &xs[(ci * h + iy as usize) * w..][..w];
            for ox in 0..ow {
                let ix = (ox * stride + kx) as isize - pad as isize;
                if ix >= 0 && ix < w as isize {
                    out[oy * ow + ox] = src[ix as usize];
                }
            }
        }
    }
    cols
}

/// Columns [C·k·k, OH·OW] → image gradient [C, H, W] (sums overlapping taps).
pub fn col2im(cols: ArrayView2<f32>, shape: [usize; 3], kernel: usize, stride: usize, pad: usize) -> Array3<f32> {
    let [c, h, w] = shape;
    let (oh, ow) = (out_size(h, kernel, stride, pad), out_size(w, kernel, stride, pad));
    let mut x = Array3::<f32>::zeros((c, h, w));
    let xs = x.as_slice_mut().expect("fresh array");
    for (row, col) in cols.outer_iter().enumerate() {
        let (ci, ky, kx) = (row / (kernel * kernel), (row / kernel) % kernel, row % kernel);
        for oy in 0..oh {
            let iy = (oy * stride + ky) as isize - pad as isize;
            if iy < 0 || iy >= h as isize {
                continue;
            }
            for ox in 0..ow {
                let ix = (ox * stride + kx) as isize - pad as isize;
                if ix >= 0 && ix < w as isize {
                    xs[(ci * h + iy as usize) * w + ix as usize] += col[oy * ow + ox];
                }
            }
        }
    }
    x
}

fn weight_matrix(w: ArrayView4<f32>) -> ArrayView2<f32> {
    let (o, i, k, _) = w.dim();
    w.into_shape_with_order((o, i * k * k)).expect("conv weight must be contiguous")
}

/// CPU twin: x [N, C, H, W], w [O, C, k, k], b [O] → y [N, O, OH, OW]. Parallel over the batch.
pub fn cpu_forward(x: ArrayView4<f32>, w: ArrayView4<f32>, b: ArrayView1<f32>, stride: usize, pad: usize) -> Array4<f32> {
    let (n, _, h, wd) = x.dim();
    let (o, _, k, _) = w.dim();
    let (oh, ow) = (out_size(h, k, stride, pad), out_size(wd, k, stride, pad));
    let wm = weight_matrix(w);
    let mut y = Array4::<f32>::zeros((n, o, oh, ow));
    Zip::from(y.outer_iter_mut()).and(x.outer_iter()).par_for_each(|mut yn, xn| {
        let cols = im2col(xn, k, stride, pad);
        let mut ym = yn.view_mut().into_shape_with_order((o, oh * ow)).expect("contiguous");
        ndarray::linalg::general_mat_mul(1.0, &wm, &cols, 0.0, &mut ym);
        for (mut row, &bias) in ym.outer_iter_mut().zip(b.iter()) {
            row += bias;
        }
    });
    y
}

pub struct ConvGrads {
    pub dx: Array4<f32>,
    pub dw: Array4<f32>,
    pub db: Array1<f32>,
}

/// CPU twin of backward-data + backward-weights + bias gradient.
pub fn cpu_backward(x: ArrayView4<f32>, w: ArrayView4<f32>, dy: ArrayView4<f32>, stride: usize, pad: usize) -> ConvGrads {
    let (n, c, h, wd) = x.dim();
    let (o, _, k, _) = w.dim();
    let (_, _, oh, ow) = dy.dim();
    let wm = weight_matrix(w);
    let dy = dy.as_standard_layout();
    let mut dx = Array4::<f32>::zeros((n, c, h, wd));
    let dwm = dx
        .outer_iter_mut()
        .into_par_iter()
        .zip(x.outer_iter().into_par_iter())
        .zip(dy.outer_iter().into_par_iter())
        .fold(
            || Array2::<f32>::zeros((o, c * k * k)),
            |mut dwm, ((mut dxn, xn), dyn_)| {
                let cols = im2col(xn, k, stride, pad);
                let dym = dyn_.into_shape_with_order((o, oh * ow)).expect("contiguous");
                ndarray::linalg::general_mat_mul(1.0, &dym, &cols.t(), 1.0, &mut dwm);
                let dcols = wm.t().dot(&dym);
                dxn.assign(&col2im(dcols.view(), [c, h, wd], k, stride, pad));
                dwm
            },
        )
        .reduce(|| Array2::<f32>::zeros((o, c * k * k)), |a, b| a + b);
    let db = dy.sum_axis(Axis(3)).sum_axis(Axis(2)).sum_axis(Axis(0));
    let dw = dwm.into_shape_with_order((o, c, k, k)).expect("contiguous");
    ConvGrads { dx, dw, db }
}

/// Naive direct convolution, the reference the im2col path is checked against.
#[cfg(test)]
pub fn naive_forward(x: ArrayView4<f32>, w: ArrayView4<f32>, b: ArrayView1<f32>, stride: usize, pad: usize) -> Array4<f32> {
    let (n, c, h, wd) = x.dim();
    let (o, _, k, _) = w.dim();
    let (oh, ow) = (out_size(h, k, stride, pad), out_size(wd, k, stride, pad));
    Array4::from_shape_fn((n, o, oh, ow), |(ni, oi, oy, ox)| {
        let mut acc = b[oi];
        for ci in 0..c {
            for ky in 0..k {
                for kx in 0..k {
                    let iy = (oy * stride + ky) as isize - pad as isize;
                    let ix = (ox * stride + kx) as isize - pad as isize;
                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                        acc += w[[oi, ci, ky, kx]] * x[[ni, ci, iy as usize, ix as usize]];
                    }
                }
            }
        }
        acc
    })
}


use super::matmul::{Batching, Layout};
use super::{Arg, Dispatch, Kernel, Kernels, Slot, groups_1d};
use crate::gpu::Gpu;

const SLOTS: &[Slot] = &[Slot::Uniform, Slot::Storage, Slot::Storage];

/// Shapes of one convolution over a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvShape {
    pub fn oh(&self) -> usize {
        out_size(self.h, self.k, self.stride, self.pad)
    }
    pub fn ow(&self) -> usize {
        out_size(self.w, self.k, self.stride, self.pad)
    }
    /// Floats in the im2col buffer.
    pub fn cols_len(&self) -> usize {
        self.n * self.c * self.k * self.k * self.oh() * self.ow()
    }
    pub fn out_len(&self) -> usize {
        self.n * self.o * self.oh() * self.ow()
    }
    fn params(&self, gpu: &Gpu, total: usize) -> wgpu::Buffer {
        let s = self;
        let words = [total, s.c, s.h, s.w, s.k, s.stride, s.pad, s.oh(), s.ow()].map(|v| v as u32);
        gpu.uniform("conv2d", &words)
    }
}

pub struct ConvKernel {
    im2col: Kernel,
    col2im: Kernel,
}

impl ConvKernel {
    pub fn new(gpu: &Gpu) -> Self {
        let src = include_str!("conv2d.wgsl");
        Self { im2col: Kernel::new(gpu, "im2col", src, "im2col", SLOTS), col2im: Kernel::new(gpu, "col2im", src, "col2im", SLOTS) }
    }
}

/// Forward: im2col, W·cols per image, + bias. `cols` is scratch of `s.cols_len()` floats
/// (kept for the weight gradient).
#[allow(clippy::too_many_arguments)]
pub fn forward(k: &Kernels, gpu: &Gpu, s: &ConvShape, x: Arg, w: Arg, b: Arg, cols: Arg, y: Arg) -> Vec<Dispatch> {
    let (ckk, ohw) = (s.c * s.k * s.k, s.oh() * s.ow());
    let params = s.params(gpu, s.cols_len());
    vec![
        k.conv.im2col.bind(gpu, &[(&params).into(), x, cols], groups_1d(s.cols_len())),
        k.matmul.matmul(gpu, (w, Layout::row_major(ckk, 0)), (cols, Layout::row_major(ohw, ckk * ohw)), (y, s.o * ohw), [s.o, ckk, ohw], Batching::Each(s.n), false),
        k.bias.add(gpu, y, b, [s.n, s.o, ohw]),
    ]
}

/// Backward: dW = Σn dY[n]·cols[n]ᵀ, db, and (when `dx` is given) dcols = Wᵀ·dY then col2im.
#[allow(clippy::too_many_arguments)]
pub fn backward(k: &Kernels, gpu: &Gpu, s: &ConvShape, cols: Arg, w: Arg, dy: Arg, dw: Arg, db: Arg, dx: Option<(Arg, Arg)>) -> Vec<Dispatch> {
    let (ckk, ohw) = (s.c * s.k * s.k, s.oh() * s.ow());
    let mut out = vec![
        k.matmul.matmul(gpu, (dy, Layout::row_major(ohw, s.o * ohw)), (cols, Layout::transposed(ohw, ckk * ohw)), (dw, 0), [s.o, ohw, ckk], Batching::Sum(s.n), false),
        k.bias.backward(gpu, dy, db, [s.n, s.o, ohw]),
    ];
    if let Some((dcols, dx)) = dx {
        out.push(k.matmul.matmul(gpu, (w, Layout::transposed(ckk, 0)), (dy, Layout::row_major(ohw, s.o * ohw)), (dcols, ckk * ohw), [ckk, s.o, ohw], Batching::Each(s.n), false));
        let params = s.params(gpu, s.n * s.c * s.h * s.w);
        out.push(k.conv.col2im.bind(gpu, &[(&params).into(), dx, dcols], groups_1d(s.n * s.c * s.h * s.w)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::check::{REDUCTION, assert_gpu_matches_cpu, check_finite_diff, close, random};

    fn arrays(s: &ConvShape, seed: u32) -> (Array4<f32>, Array4<f32>, Array1<f32>) {
        let x = Array4::from_shape_vec((s.n, s.c, s.h, s.w), random(s.n * s.c * s.h * s.w, seed)).unwrap();
        let w = Array4::from_shape_vec((s.o, s.c, s.k, s.k), random(s.o * s.c * s.k * s.k, seed + 1)).unwrap();
        let b = Array1::from(random(s.o, seed + 2));
        (x, w, b)
    }

    #[test]
    fn im2col_path_matches_direct_convolution() {
        for s in [ConvShape { n: 2, c: 3, h: 9, w: 7, o: 4, k: 3, stride: 1, pad: 1 }, ConvShape { n: 2, c: 3, h: 9, w: 8, o: 5, k: 3, stride: 2, pad: 1 }] {
            let (x, w, b) = arrays(&s, 40);
            let fast = cpu_forward(x.view(), w.view(), b.view(), s.stride, s.pad);
            let slow = naive_forward(x.view(), w.view(), b.view(), s.stride, s.pad);
            assert!(fast.iter().zip(&slow).all(|(a, b)| close(*a, *b, REDUCTION)));
        }
    }

    #[test]
    fn gpu_forward_and_backward_match_cpu() {
        let Some(gpu) = crate::gpu::test_gpu() else { return };
        let kernels = Kernels::new(&gpu);
        for s in [
            ConvShape { n: 3, c: 5, h: 13, w: 11, o: 19, k: 3, stride: 1, pad: 1 },
            ConvShape { n: 2, c: 6, h: 12, w: 9, o: 17, k: 3, stride: 2, pad: 1 },
            ConvShape { n: 2, c: 6, h: 12, w: 9, o: 7, k: 1, stride: 2, pad: 0 },
        ] {
            let (x, w, b) = arrays(&s, 41);
            let y = cpu_forward(x.view(), w.view(), b.view(), s.stride, s.pad);
            let dy = Array4::from_shape_vec(y.dim(), random(y.len(), 44)).unwrap();
            let g = cpu_backward(x.view(), w.view(), dy.view(), s.stride, s.pad);

            let up = |name, a: &[f32]| gpu.upload(name, a);
            let (gx, gw, gb, gdy) = (up("x", x.as_slice().unwrap()), up("w", w.as_slice().unwrap()), up("b", b.as_slice().unwrap()), up("dy", dy.as_slice().unwrap()));
            let cols_bytes = (s.cols_len() * 4) as u64;
            let (gcols, gdcols, gy) = (gpu.zeros("cols", cols_bytes), gpu.zeros("dcols", cols_bytes), gpu.zeros("y", (y.len() * 4) as u64));
            let (gdw, gdb, gdx) = (gpu.zeros("dw", (w.len() * 4) as u64), gpu.zeros("db", (s.o * 4) as u64), gpu.zeros("dx", (x.len() * 4) as u64));
            let mut ds = forward(&kernels, &gpu, &s, (&gx).into(), (&gw).into(), (&gb).into(), (&gcols).into(), (&gy).into());
            ds.extend(backward(&kernels, &gpu, &s, (&gcols).into(), (&gw).into(), (&gdy).into(), (&gdw).into(), (&gdb).into(), Some(((&gdcols).into(), (&gdx).into()))));
            gpu.run(&ds.iter().collect::<Vec<_>>());
            assert_gpu_matches_cpu("conv_fwd", &gpu.read_f32(&gy), y.as_slice().unwrap(), REDUCTION);
            assert_gpu_matches_cpu("conv_dw", &gpu.read_f32(&gdw), g.dw.as_slice().unwrap(), REDUCTION);
            assert_gpu_matches_cpu("conv_db", &gpu.read_f32(&gdb), g.db.as_slice().unwrap(), REDUCTION);
            assert_gpu_matches_cpu("conv_dx", &gpu.read_f32(&gdx), g.dx.as_slice().unwrap(), REDUCTION);
        }
    }

    #[test]
    fn cpu_backward_matches_finite_differences() {
        let s = ConvShape { n: 2, c: 2, h: 5, w: 6, o: 3, k: 3, stride: 2, pad: 1 };
        let (x, w, b) = arrays(&s, 45);
        let r = Array4::from_shape_vec((s.n, s.o, s.oh(), s.ow()), random(s.out_len(), 48)).unwrap();
        let g = cpu_backward(x.view(), w.view(), r.view(), s.stride, s.pad);
        let loss_x = |v: &[f32]| {
            let xa = Array4::from_shape_vec(x.dim(), v.to_vec()).unwrap();
            (cpu_forward(xa.view(), w.view(), b.view(), s.stride, s.pad) * &r).iter().map(|&v| v as f64).sum()
        };
        check_finite_diff("conv_dx", x.as_slice().unwrap(), g.dx.as_slice().unwrap(), 40, loss_x);
        let loss_w = |v: &[f32]| {
            let wa = Array4::from_shape_vec(w.dim(), v.to_vec()).unwrap();
            (cpu_forward(x.view(), wa.view(), b.view(), s.stride, s.pad) * &r).iter().map(|&v| v as f64).sum()
        };
        check_finite_diff("conv_dw", w.as_slice().unwrap(), g.dw.as_slice().unwrap(), 40, loss_w);
    }
}
