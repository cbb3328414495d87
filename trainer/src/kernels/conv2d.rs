//! 2-D convolution (NCHW, square kernel, zero padding).
//! GPU (`conv2d.wgsl`): implicit GEMM — forward y = W·cols + b, backward-weights dW = dY·colsᵀ
//! (db with it), backward-data as a gather of dY through the flipped kernel — with the im2col
//! matrix `cols` gathered tile by tile into workgroup memory, never stored.
//! CPU twin: im2col + matrixmultiply GEMMs over chunks of the batch; stride-1 backward-data as a
//! convolution with the flipped kernel, strided backward-data as Wᵀ·dY then col2im.

use ndarray::{Array1, Array2, Array4, ArrayView1, ArrayView2, ArrayView3, ArrayView4, ArrayViewMut2, ArrayViewMut3, Axis, Zip, s};
use rayon::prelude::*;

/// Output side length for input side `h`.
pub fn out_size(h: usize, kernel: usize, stride: usize, pad: usize) -> usize {
    (h + 2 * pad - kernel) / stride + 1
}

/// For stride 1: the output columns ox in lo..hi whose input column ox + kx − pad is inside 0..w.
fn in_bounds(kx: usize, pad: usize, w: usize, ow: usize) -> (usize, usize) {
    let lo = pad.saturating_sub(kx);
    (lo, ow.min((w + pad).saturating_sub(kx)).max(lo))
}

/// One image [C, H, W] → columns [C·k·k, OH·OW], written into `out` (zeroed by the caller;
/// each row of `out` must be contiguous, e.g. a column block of a wider matrix).
fn im2col_into(x: ArrayView3<f32>, kernel: usize, stride: usize, pad: usize, mut out: ArrayViewMut2<f32>) {
    let (_, h, w) = x.dim();
    let (oh, ow) = (out_size(h, kernel, stride, pad), out_size(w, kernel, stride, pad));
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    for (row, mut out) in out.outer_iter_mut().enumerate() {
        let (ci, ky, kx) = (row / (kernel * kernel), (row / kernel) % kernel, row % kernel);
        let out = out.as_slice_mut().expect("contiguous row");
        for oy in 0..oh {
            let iy = (oy * stride + ky) as isize - pad as isize;
            if iy < 0 || iy >= h as isize {
                continue;
            }
            let src = &xs[(ci * h + iy as usize) * w..][..w];
            let dst = &mut out[oy * ow..][..ow];
            if stride == 1 {
                // ix = ox + kx − pad: one contiguous copy of the in-bounds run.
                let (lo, hi) = in_bounds(kx, pad, w, ow);
                dst[lo..hi].copy_from_slice(&src[lo + kx - pad..hi + kx - pad]);
                continue;
            }
            for (ox, d) in dst.iter_mut().enumerate() {
                let ix = (ox * stride + kx) as isize - pad as isize;
                if ix >= 0 && ix < w as isize {
                    *d = src[ix as usize];
                }
            }
        }
    }
}

/// Images [B, C, H, W] → columns [C·k·k, B·OH·OW] (image b in columns b·OH·OW..), so one
/// matrix product covers a chunk of the batch.
fn im2col_batch(x: ArrayView4<f32>, kernel: usize, stride: usize, pad: usize) -> Array2<f32> {
    let (b, c, h, w) = x.dim();
    let hw = out_size(h, kernel, stride, pad) * out_size(w, kernel, stride, pad);
    let mut cols = Array2::<f32>::zeros((c * kernel * kernel, b * hw));
    for (i, xi) in x.outer_iter().enumerate() {
        im2col_into(xi, kernel, stride, pad, cols.slice_mut(s![.., i * hw..(i + 1) * hw]));
    }
    cols
}

/// Columns [C·k·k, OH·OW] → image gradient [C, H, W] (sums overlapping taps) into `x` (zeroed).
fn col2im_into(cols: ArrayView2<f32>, kernel: usize, stride: usize, pad: usize, mut x: ArrayViewMut3<f32>) {
    let (_, h, w) = x.dim();
    let (oh, ow) = (out_size(h, kernel, stride, pad), out_size(w, kernel, stride, pad));
    let xs = x.as_slice_mut().expect("contiguous image");
    for (row, col) in cols.outer_iter().enumerate() {
        let (ci, ky, kx) = (row / (kernel * kernel), (row / kernel) % kernel, row % kernel);
        let col = col.to_slice().expect("contiguous row");
        for oy in 0..oh {
            let iy = (oy * stride + ky) as isize - pad as isize;
            if iy < 0 || iy >= h as isize {
                continue;
            }
            let dst = &mut xs[(ci * h + iy as usize) * w..][..w];
            if stride == 1 {
                let (lo, hi) = in_bounds(kx, pad, w, ow);
                dst[lo + kx - pad..hi + kx - pad].iter_mut().zip(&col[oy * ow + lo..oy * ow + hi]).for_each(|(d, &v)| *d += v);
                continue;
            }
            for (ox, &v) in col[oy * ow..][..ow].iter().enumerate() {
                let ix = (ox * stride + kx) as isize - pad as isize;
                if ix >= 0 && ix < w as isize {
                    dst[ix as usize] += v;
                }
            }
        }
    }
}

fn weight_matrix(w: ArrayView4<f32>) -> ArrayView2<f32> {
    let (o, i, k, _) = w.dim();
    w.into_shape_with_order((o, i * k * k)).expect("conv weight must be contiguous")
}

/// Images per matrix product on the CPU, given the im2col columns of one image (floats): enough
/// columns for the GEMM to run near peak, few enough that the columns are still in cache when the
/// GEMM packs them, and that the batch splits evenly over the threads. Of 0.5, 1, 2 MB and no
/// limit (16 images), 1 MB measured best on a 2-core EPYC (512 KB L2 per core): against no limit,
/// wall time fell 20% for cnn, 4% for resnet and 13% for resnet-wide.
fn chunk_len(n: usize, cols_per_image: usize) -> usize {
    const COLS_BUDGET_BYTES: usize = 1 << 20;
    let fit = (COLS_BUDGET_BYTES / (4 * cols_per_image)).max(1);
    n.div_ceil(2 * rayon::current_num_threads()).clamp(1, 16).min(fit)
}

/// CPU twin: x [N, C, H, W], w [O, C, k, k], b [O] → y [N, O, OH, OW]. Parallel over chunks of
/// the batch, one W · cols product per chunk.
pub fn cpu_forward(x: ArrayView4<f32>, w: ArrayView4<f32>, b: ArrayView1<f32>, stride: usize, pad: usize) -> Array4<f32> {
    let (n, _, h, wd) = x.dim();
    let (o, _, k, _) = w.dim();
    let (oh, ow) = (out_size(h, k, stride, pad), out_size(wd, k, stride, pad));
    let hw = oh * ow;
    let wm = weight_matrix(w);
    let chunk = chunk_len(n, wm.ncols() * hw);
    let mut y = Array4::<f32>::zeros((n, o, oh, ow));
    y.axis_chunks_iter_mut(Axis(0), chunk).into_par_iter().zip(x.axis_chunks_iter(Axis(0), chunk)).for_each(|(mut yc, xc)| {
        let cols = im2col_batch(xc, k, stride, pad);
        let mut prod = Array2::<f32>::zeros((o, cols.ncols()));
        ndarray::linalg::general_mat_mul(1.0, &wm, &cols, 0.0, &mut prod);
        for (i, mut yi) in yc.outer_iter_mut().enumerate() {
            let mut yi = yi.view_mut().into_shape_with_order((o, hw)).expect("contiguous");
            Zip::from(yi.rows_mut()).and(prod.slice(s![.., i * hw..(i + 1) * hw]).rows()).and(&b).for_each(|mut dst, src, &bias| {
                Zip::from(&mut dst).and(&src).for_each(|d, &v| *d = v + bias);
            });
        }
    });
    y
}

pub struct ConvGrads {
    /// None when the caller does not need the input gradient (the model's first layer).
    pub dx: Option<Array4<f32>>,
    pub dw: Array4<f32>,
    pub db: Array1<f32>,
}

/// dY of a chunk of images as one [O, B·OH·OW] matrix (the column order of `im2col_batch`).
fn channels_by_pixels(dy: ArrayView4<f32>) -> Array2<f32> {
    let (b, o, oh, ow) = dy.dim();
    let hw = oh * ow;
    let mut m = Array2::<f32>::zeros((o, b * hw));
    for (i, dyi) in dy.outer_iter().enumerate() {
        m.slice_mut(s![.., i * hw..(i + 1) * hw]).assign(&dyi.into_shape_with_order((o, hw)).expect("contiguous"));
    }
    m
}

/// CPU twin of backward-weights + bias gradient and, when `need_dx`, backward-data.
/// Per chunk of the batch: dWᵀ += cols·dYᵀ on the im2col columns (cheap row copies; the old
/// im2row gather and col2im scatter together took ~23% of a resnet profile), reduced across
/// threads; dx from [`input_gradient`].
pub fn cpu_backward(x: ArrayView4<f32>, w: ArrayView4<f32>, dy: ArrayView4<f32>, stride: usize, pad: usize, need_dx: bool) -> ConvGrads {
    let (n, c, h, wd) = x.dim();
    let (o, _, k, _) = w.dim();
    let dy = dy.as_standard_layout();
    let chunk = chunk_len(n, c * k * k * dy.shape()[2] * dy.shape()[3]);
    let per_chunk = |(mut dwt, mut db): (Array2<f32>, Array1<f32>), (xc, dyc): (ArrayView4<f32>, ArrayView4<f32>)| {
        let cols = im2col_batch(xc, k, stride, pad);
        let dym = channels_by_pixels(dyc);
        ndarray::linalg::general_mat_mul(1.0, &cols, &dym.t(), 1.0, &mut dwt);
        db += &dym.sum_axis(Axis(1));
        (dwt, db)
    };
    let zero = || (Array2::<f32>::zeros((c * k * k, o)), Array1::<f32>::zeros(o));
    let sum = |a: (Array2<f32>, Array1<f32>), b: (Array2<f32>, Array1<f32>)| (a.0 + b.0, a.1 + b.1);
    let inputs = x.axis_chunks_iter(Axis(0), chunk).into_par_iter().zip(dy.axis_chunks_iter(Axis(0), chunk));
    let (dwt, db) = inputs.fold(zero, per_chunk).reduce(zero, sum);
    let dx = need_dx.then(|| input_gradient(dy.view(), w, stride, pad, [h, wd]));
    let dwm = dwt.reversed_axes().as_standard_layout().into_owned();
    let dw = dwm.into_shape_with_order((o, c, k, k)).expect("contiguous");
    ConvGrads { dx, dw, db }
}

/// d(loss)/dx [N, C, H, W] from dY. Stride 1: a stride-1 convolution of dY with the kernel
/// flipped and its channel axes swapped (padding k−1−pad), so it reuses the fast im2col forward
/// instead of a scatter. Strided: dcols = Wᵀ·dY per chunk, scattered back by col2im.
fn input_gradient(dy: ArrayView4<f32>, w: ArrayView4<f32>, stride: usize, pad: usize, [h, wd]: [usize; 2]) -> Array4<f32> {
    let (n, _, oh, ow) = dy.dim();
    let (_, c, k, _) = w.dim();
    if stride == 1 && pad < k {
        let flipped = w.permuted_axes([1, 0, 2, 3]).slice_move(s![.., .., ..;-1, ..;-1]).as_standard_layout().into_owned();
        let dx = cpu_forward(dy, flipped.view(), Array1::zeros(c).view(), 1, k - 1 - pad);
        debug_assert_eq!(dx.dim(), (n, c, h, wd));
        return dx;
    }
    let hw = oh * ow;
    let wm = weight_matrix(w);
    let chunk = chunk_len(n, wm.ncols() * hw);
    let mut dx = Array4::<f32>::zeros((n, c, h, wd));
    dx.axis_chunks_iter_mut(Axis(0), chunk).into_par_iter().zip(dy.axis_chunks_iter(Axis(0), chunk)).for_each(|(mut dxc, dyc)| {
        let dcols = wm.t().dot(&channels_by_pixels(dyc));
        for (i, dxi) in dxc.outer_iter_mut().enumerate() {
            col2im_into(dcols.slice(s![.., i * hw..(i + 1) * hw]), k, stride, pad, dxi);
        }
    });
    dx
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


use super::{Arg, Dispatch, Kernels, Slot, Specialized};
use crate::gpu::Gpu;

const SLOTS: &[Slot] = &[Slot::Storage; 6];
/// Output tile of one workgroup (BM rows × 4·LANES columns in conv2d.wgsl) and its depth step (BK).
const BM: usize = 32;
const BK: usize = 16;
/// Backward weights: enough workgroups (tiles × splits) to fill a large GPU, but splits at least
/// this deep, so the partial sums stay small next to the reduction.
const TARGET_WORKGROUPS: usize = 256;
const MIN_SPLIT: usize = 1024;

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
    pub fn out_len(&self) -> usize {
        self.n * self.o * self.oh() * self.ow()
    }

    /// Backward weights: (depth of one split, number of splits) of the N·OH·OW reduction.
    fn splits(&self) -> (usize, usize) {
        let depth = self.n * self.oh() * self.ow();
        let tiles = self.o.div_ceil(BM) * (self.c * self.k * self.k + 1).div_ceil(4 * self.weight_lanes());
        let split = depth.div_ceil((TARGET_WORKGROUPS / tiles).max(1)).max(MIN_SPLIT).next_multiple_of(BK);
        (split, depth.div_ceil(split))
    }

    /// Backward weights has only C·K·K + 1 columns (10 for a 3×3 conv of one channel), so its
    /// workgroups are narrowed to the lane count (8..64) that pads them least.
    fn weight_lanes(&self) -> usize {
        let cols = self.c * self.k * self.k + 1;
        [64, 32, 16, 8].into_iter().min_by_key(|&lanes| cols.next_multiple_of(4 * lanes)).expect("lane counts")
    }

    fn lanes(&self, mode: u32) -> usize {
        if mode == 2 { self.weight_lanes() } else { 64 }
    }

    /// conv2d.wgsl's override constants for `mode` (0 forward, 1 backward data, 2 backward weights).
    fn constants(&self, mode: u32) -> Vec<(&'static str, f64)> {
        let (split, splits) = self.splits();
        let v = |x: usize| x as f64;
        vec![
            ("MODE", mode as f64),
            ("N", v(self.n)),
            ("C", v(self.c)),
            ("H", v(self.h)),
            ("W", v(self.w)),
            ("O", v(self.o)),
            ("K", v(self.k)),
            ("S", v(self.stride)),
            ("PAD", v(self.pad)),
            ("OH", v(self.oh())),
            ("OW", v(self.ow())),
            ("SPLIT", v(split)),
            ("SPLITS", v(splits)),
            ("LANES", v(self.lanes(mode))),
        ]
    }
}

/// Workgroups for a grid of BM × 4·lanes output tiles (`cols` × `rows`, `depth` splits).
fn tiles(cols: usize, rows: usize, depth: usize, lanes: usize) -> [u32; 3] {
    [cols.div_ceil(4 * lanes), rows.div_ceil(BM), depth].map(|g| u32::try_from(g).ok().filter(|&g| g <= 65535).expect("conv grid exceeds 65535 workgroups per dimension"))
}

/// The implicit-GEMM pipelines (conv2d.wgsl), specialised per layer shape.
pub struct ConvKernel {
    forward: Specialized,
    backward_data: Specialized,
    backward_weights: Specialized,
    reduce: Specialized,
}

impl ConvKernel {
    pub fn new(_gpu: &Gpu) -> Self {
        let src = include_str!("conv2d.wgsl");
        Self {
            forward: Specialized::new("conv_fwd", src, "main", SLOTS),
            backward_data: Specialized::new("conv_bwd_data", src, "main", SLOTS),
            backward_weights: Specialized::new("conv_bwd_weights", src, "main", SLOTS),
            reduce: Specialized::new("conv_bwd_weights_sum", src, "reduce_splits", SLOTS),
        }
    }
}

/// Forward: y = W ⊛ x + b in one dispatch (no im2col buffer).
pub fn forward(k: &Kernels, gpu: &Gpu, s: &ConvShape, x: Arg, w: Arg, b: Arg, y: Arg) -> Vec<Dispatch> {
    // Bindings: w, x, dy, bias, out, dw (dy and dw unused here: bound to y).
    vec![k.conv.forward.bind(gpu, &s.constants(0), &[w, x, y, b, y, y], tiles(s.n * s.oh() * s.ow(), s.o, 1, s.lanes(0)))]
}

/// Backward: dW and db (split reduction, then the sum of the splits), and dx when asked for.
#[allow(clippy::too_many_arguments)]
pub fn backward(k: &Kernels, gpu: &Gpu, s: &ConvShape, x: Arg, w: Arg, dy: Arg, dw: Arg, db: Arg, dx: Option<Arg>) -> Vec<Dispatch> {
    let ckk1 = s.c * s.k * s.k + 1;
    let (_, splits) = s.splits();
    // The bind groups keep this scratch alive.
    let partial = gpu.zeros("conv_partial", (splits * s.o * ckk1 * 4) as u64);
    let args = [dw, x, dy, db, (&partial).into(), dw];
    let constants = s.constants(2);
    let mut out = vec![
        k.conv.backward_weights.bind(gpu, &constants, &args, tiles(ckk1, s.o, splits, s.lanes(2))),
        k.conv.reduce.bind(gpu, &constants, &args, [(s.o * ckk1).div_ceil(64) as u32, 1, 1]),
    ];
    if let Some(dx) = dx {
        out.push(k.conv.backward_data.bind(gpu, &s.constants(1), &[w, dx, dy, dx, dx, dx], tiles(s.n * s.h * s.w, s.c, 1, s.lanes(1))));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::check::{REDUCTION, assert_gpu_matches_cpu, check_finite_diff, close, random, run, test_gpu};

    fn arrays(s: &ConvShape, seed: u32) -> (Array4<f32>, Array4<f32>, Array1<f32>) {
        let x = Array4::from_shape_vec((s.n, s.c, s.h, s.w), random(s.n * s.c * s.h * s.w, seed)).unwrap();
        let w = Array4::from_shape_vec((s.o, s.c, s.k, s.k), random(s.o * s.c * s.k * s.k, seed + 1)).unwrap();
        let b = Array1::from(random(s.o, seed + 2));
        (x, w, b)
    }

    #[test]
    fn im2col_path_matches_direct_convolution() {
        for s in [
            ConvShape { n: 2, c: 3, h: 9, w: 7, o: 4, k: 3, stride: 1, pad: 1 },
            ConvShape { n: 2, c: 3, h: 9, w: 8, o: 5, k: 3, stride: 2, pad: 1 },
            // Several images per matrix product (chunks of 10, the last one short).
            ConvShape { n: 37, c: 3, h: 7, w: 7, o: 6, k: 3, stride: 1, pad: 1 },
        ] {
            let (x, w, b) = arrays(&s, 40);
            let fast = cpu_forward(x.view(), w.view(), b.view(), s.stride, s.pad);
            let slow = naive_forward(x.view(), w.view(), b.view(), s.stride, s.pad);
            assert!(fast.iter().zip(&slow).all(|(a, b)| close(*a, *b, REDUCTION)));
        }
    }

    /// The chunked backward (several images per product, partial sums reduced across threads)
    /// equals the sum of one-image backwards; skipping dx changes nothing else.
    #[test]
    fn batched_backward_equals_sum_over_images() {
        let s = ConvShape { n: 37, c: 3, h: 7, w: 6, o: 5, k: 3, stride: 1, pad: 1 };
        let (x, w, _) = arrays(&s, 50);
        let dy = Array4::from_shape_vec((s.n, s.o, s.oh(), s.ow()), random(s.out_len(), 51)).unwrap();
        let all = cpu_backward(x.view(), w.view(), dy.view(), s.stride, s.pad, true);
        let (mut dw, mut db) = (Array4::<f32>::zeros(w.dim()), Array1::<f32>::zeros(s.o));
        for i in 0..s.n {
            let one = cpu_backward(x.slice(s![i..i + 1, .., .., ..]), w.view(), dy.slice(s![i..i + 1, .., .., ..]), s.stride, s.pad, true);
            let dx_one = one.dx.unwrap();
            let dx_all = all.dx.as_ref().unwrap().slice(s![i..i + 1, .., .., ..]).to_owned();
            assert!(dx_one.iter().zip(&dx_all).all(|(a, b)| close(*a, *b, REDUCTION)), "dx of image {i}");
            dw += &one.dw;
            db += &one.db;
        }
        assert!(dw.iter().zip(&all.dw).all(|(a, b)| close(*a, *b, REDUCTION)));
        assert!(db.iter().zip(&all.db).all(|(a, b)| close(*a, *b, REDUCTION)));
        let no_dx = cpu_backward(x.view(), w.view(), dy.view(), s.stride, s.pad, false);
        assert!(no_dx.dx.is_none());
        assert_eq!((no_dx.dw, no_dx.db), (all.dw, all.db));
    }

    #[test]
    fn gpu_forward_and_backward_match_cpu() {
        let Some(gpu) = test_gpu() else { return };
        let kernels = Kernels::new(&gpu);
        // Odd sizes, several 32×256 tiles each way (forward o = 70 and n·oh·ow = 1,287, backward-data
        // c = 67), several backward-weights splits (n·oh·ow = 1,287 > 1,024; c·k·k + 1 = 604 > 256
        // columns with the bias column in a partial tile) and stride 2 with both kernel sizes.
        for s in [
            ConvShape { n: 9, c: 5, h: 13, w: 11, o: 19, k: 3, stride: 1, pad: 1 },
            ConvShape { n: 2, c: 3, h: 9, w: 7, o: 70, k: 3, stride: 1, pad: 1 },
            ConvShape { n: 2, c: 67, h: 5, w: 6, o: 9, k: 3, stride: 1, pad: 1 },
            ConvShape { n: 2, c: 67, h: 5, w: 6, o: 33, k: 3, stride: 1, pad: 1 },
            ConvShape { n: 2, c: 6, h: 12, w: 9, o: 17, k: 3, stride: 2, pad: 1 },
            ConvShape { n: 2, c: 6, h: 12, w: 9, o: 7, k: 1, stride: 2, pad: 0 },
        ] {
            let (x, w, b) = arrays(&s, 41);
            let y = cpu_forward(x.view(), w.view(), b.view(), s.stride, s.pad);
            let dy = Array4::from_shape_vec(y.dim(), random(y.len(), 44)).unwrap();
            let g = cpu_backward(x.view(), w.view(), dy.view(), s.stride, s.pad, true);

            let up = |name, a: &[f32]| gpu.upload(name, a);
            let (gx, gw, gb, gdy) = (up("x", x.as_slice().unwrap()), up("w", w.as_slice().unwrap()), up("b", b.as_slice().unwrap()), up("dy", dy.as_slice().unwrap()));
            let gy = gpu.zeros("y", (y.len() * 4) as u64);
            let (gdw, gdb, gdx) = (gpu.zeros("dw", (w.len() * 4) as u64), gpu.zeros("db", (s.o * 4) as u64), gpu.zeros("dx", (x.len() * 4) as u64));
            let mut ds = forward(&kernels, &gpu, &s, (&gx).into(), (&gw).into(), (&gb).into(), (&gy).into());
            ds.extend(backward(&kernels, &gpu, &s, (&gx).into(), (&gw).into(), (&gdy).into(), (&gdw).into(), (&gdb).into(), Some((&gdx).into())));
            run(&gpu, &ds.iter().collect::<Vec<_>>());
            assert_gpu_matches_cpu("conv_fwd", &gpu.read_f32(&gy), y.as_slice().unwrap(), REDUCTION);
            assert_gpu_matches_cpu("conv_dw", &gpu.read_f32(&gdw), g.dw.as_slice().unwrap(), REDUCTION);
            assert_gpu_matches_cpu("conv_db", &gpu.read_f32(&gdb), g.db.as_slice().unwrap(), REDUCTION);
            assert_gpu_matches_cpu("conv_dx", &gpu.read_f32(&gdx), g.dx.as_ref().unwrap().as_slice().unwrap(), REDUCTION);
        }
    }

    #[test]
    fn cpu_backward_matches_finite_differences() {
        // Strided (col2im) and stride-1 (flipped-kernel convolution) backward-data paths.
        for s in [ConvShape { n: 2, c: 2, h: 5, w: 6, o: 3, k: 3, stride: 2, pad: 1 }, ConvShape { n: 2, c: 2, h: 5, w: 4, o: 3, k: 3, stride: 1, pad: 1 }] {
            check_backward_by_finite_differences(s);
        }
    }

    fn check_backward_by_finite_differences(s: ConvShape) {
        let (x, w, b) = arrays(&s, 45);
        let r = Array4::from_shape_vec((s.n, s.o, s.oh(), s.ow()), random(s.out_len(), 48)).unwrap();
        let g = cpu_backward(x.view(), w.view(), r.view(), s.stride, s.pad, true);
        let loss_x = |v: &[f32]| {
            let xa = Array4::from_shape_vec(x.dim(), v.to_vec()).unwrap();
            (cpu_forward(xa.view(), w.view(), b.view(), s.stride, s.pad) * &r).iter().map(|&v| v as f64).sum()
        };
        check_finite_diff("conv_dx", x.as_slice().unwrap(), g.dx.as_ref().unwrap().as_slice().unwrap(), 40, loss_x);
        let loss_w = |v: &[f32]| {
            let wa = Array4::from_shape_vec(w.dim(), v.to_vec()).unwrap();
            (cpu_forward(x.view(), wa.view(), b.view(), s.stride, s.pad) * &r).iter().map(|&v| v as f64).sum()
        };
        check_finite_diff("conv_dw", w.as_slice().unwrap(), g.dw.as_slice().unwrap(), 40, loss_w);
    }
}
