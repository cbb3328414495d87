//! Batch normalisation over (N, H, W) per channel. Training uses batch statistics (biased variance
//! to normalise, unbiased for the running estimate, PyTorch convention); eval uses running stats.

use ndarray::{Array1, Array4, ArrayView1, ArrayView4, ArrayViewMut1, Zip};
use rayon::prelude::*;

/// What the backward pass needs from the forward pass.
pub struct BnCache {
    pub xhat: Array4<f32>,
    pub inv_std: Array1<f32>,
}

/// Σ f(a[i], b[i]) with 8 independent f32 accumulators, so the compiler can vectorise it.
fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(&x, &y)| f(x, y)).sum();
    for (xa, xb) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += f(xa[j], xb[j]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Per channel (Σ f(a, b), Σ g(a, b)) over (N, H, W); parallel over channels. Each H·W plane is
/// summed in f32 and planes are added in f64, so a whole batch keeps full f32 precision.
fn channel_sums2(
    a: &[f32],
    b: &[f32],
    [n, c, hw]: [usize; 3],
    f: impl Fn(usize, f32, f32) -> f32 + Sync,
    g: impl Fn(usize, f32, f32) -> f32 + Sync,
) -> (Array1<f32>, Array1<f32>) {
    let sums: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ci| {
            let (mut sf, mut sg) = (0f64, 0f64);
            for ni in 0..n {
                let plane = (ni * c + ci) * hw..(ni * c + ci + 1) * hw;
                sf += lane_sum(&a[plane.clone()], &b[plane.clone()], |x, y| f(ci, x, y)) as f64;
                sg += lane_sum(&a[plane.clone()], &b[plane], |x, y| g(ci, x, y)) as f64;
            }
            (sf as f32, sg as f32)
        })
        .collect();
    let (sf, sg): (Vec<f32>, Vec<f32>) = sums.into_iter().unzip();
    (Array1::from(sf), Array1::from(sg))
}

/// Standard-layout data of a [N, C, H, W] tensor and its [N, C, H·W] sizes.
fn planes<'a>(x: &'a ndarray::CowArray<'a, f32, ndarray::Ix4>) -> (&'a [f32], [usize; 3]) {
    let (n, c, h, w) = x.dim();
    (x.as_slice().expect("standard layout"), [n, c, h * w])
}

/// CPU twin (train mode): returns y, the cache, and updates the running stats in place.
/// One statistics pass (Σx, Σx² per channel) and one pass writing x̂ and y.
#[allow(clippy::too_many_arguments)]
pub fn cpu_forward_train(
    x: ArrayView4<f32>,
    gamma: ArrayView1<f32>,
    beta: ArrayView1<f32>,
    mut running_mean: ArrayViewMut1<f32>,
    mut running_var: ArrayViewMut1<f32>,
    eps: f32,
    momentum: f32,
) -> (Array4<f32>, BnCache) {
    let x = x.as_standard_layout();
    let (xs, [n, c, hw]) = planes(&x);
    let m = (n * hw) as f32;
    // Shifting by the first pixel of each channel keeps Σx² − (Σx)²/M from cancelling badly.
    let shift = Array1::from_shape_fn(c, |ci| xs[ci * hw]);
    let (s1, s2) = channel_sums2(xs, xs, [n, c, hw], |ci, v, _| v - shift[ci], |ci, v, _| (v - shift[ci]) * (v - shift[ci]));
    let mean = &shift + &(&s1 / m);
    let var = Zip::from(&s1).and(&s2).map_collect(|&s1, &s2| ((s2 - s1 * s1 / m) / m).max(0.0));
    let inv_std = var.mapv(|v| 1.0 / (v + eps).sqrt());
    let mut xhat = Array4::<f32>::zeros(x.raw_dim());
    let mut y = Array4::<f32>::zeros(x.raw_dim());
    let outs = xhat.as_slice_mut().expect("fresh").par_chunks_mut(hw).zip(y.as_slice_mut().expect("fresh").par_chunks_mut(hw));
    outs.zip(xs.par_chunks(hw)).enumerate().for_each(|(plane, ((xh, yp), xp))| {
        let ci = plane % c;
        let (mu, inv, g, b) = (mean[ci], inv_std[ci], gamma[ci], beta[ci]);
        for ((h, y), &v) in xh.iter_mut().zip(yp.iter_mut()).zip(xp) {
            *h = (v - mu) * inv;
            *y = *h * g + b;
        }
    });
    let unbiased = if m > 1.0 { m / (m - 1.0) } else { 1.0 };
    Zip::from(&mut running_mean).and(&mean).for_each(|r, &b| *r = (1.0 - momentum) * *r + momentum * b);
    Zip::from(&mut running_var).and(&var).for_each(|r, &b| *r = (1.0 - momentum) * *r + momentum * b * unbiased);
    (y, BnCache { xhat, inv_std })
}

/// CPU twin (eval mode).
pub fn cpu_forward_eval(
    x: ArrayView4<f32>,
    gamma: ArrayView1<f32>,
    beta: ArrayView1<f32>,
    running_mean: ArrayView1<f32>,
    running_var: ArrayView1<f32>,
    eps: f32,
) -> Array4<f32> {
    let c = gamma.len();
    let scale = Array1::from_shape_fn(c, |i| gamma[i] / (running_var[i] + eps).sqrt());
    let shift = Array1::from_shape_fn(c, |i| beta[i] - running_mean[i] * scale[i]);
    let scale = scale.into_shape_with_order((1, c, 1, 1)).unwrap();
    let shift = shift.into_shape_with_order((1, c, 1, 1)).unwrap();
    &x * &scale + &shift
}

/// CPU twin of the backward pass: (dx, dgamma, dbeta). One reduction pass, one dx pass.
pub fn cpu_backward(dy: ArrayView4<f32>, gamma: ArrayView1<f32>, cache: &BnCache) -> (Array4<f32>, Array1<f32>, Array1<f32>) {
    let dy = dy.as_standard_layout();
    let (dys, [n, c, hw]) = planes(&dy);
    let xhs = cache.xhat.as_slice().expect("standard layout");
    let m = (n * hw) as f32;
    let (dbeta, dgamma) = channel_sums2(dys, xhs, [n, c, hw], |_, d, _| d, |_, d, xh| d * xh);
    // dx = γ·σ⁻¹/M · (M·dy − Σdy − x̂·Σ(dy·x̂))
    let k = &gamma * &cache.inv_std / m;
    let mut dx = Array4::<f32>::zeros(dy.raw_dim());
    dx.as_slice_mut().expect("fresh").par_chunks_mut(hw).zip(dys.par_chunks(hw).zip(xhs.par_chunks(hw))).enumerate().for_each(
        |(plane, (dxp, (dyp, xhp)))| {
            let ci = plane % c;
            let (k, db, dg) = (k[ci], dbeta[ci], dgamma[ci]);
            for ((o, &d), &xh) in dxp.iter_mut().zip(dyp).zip(xhp) {
                *o = k * (m * d - db - xh * dg);
            }
        },
    );
    (dx, dgamma, dbeta)
}

use super::{Arg, Dispatch, Slot, Specialized, f, groups_1d};
use crate::gpu::Gpu;

const SLOTS: &[Slot] = &[Slot::Uniform, Slot::Storage, Slot::Storage, Slot::Storage, Slot::Storage, Slot::Storage, Slot::Storage, Slot::Storage];

/// The batch-norm entry points, compiled per layer shape (batchnorm.wgsl's overrides).
pub struct BnKernel {
    stats: Specialized,
    normalize: Specialized,
    eval: Specialized,
    backward_reduce: Specialized,
    backward_dx: Specialized,
}

/// The buffers of one batch-norm layer (see batchnorm.wgsl for the paired layouts).
#[derive(Clone, Copy)]
pub struct BnArgs<'a> {
    /// Input in forward, dy in backward.
    pub x: Arg<'a>,
    /// Output in forward, dx in backward.
    pub y: Arg<'a>,
    pub xhat: Arg<'a>,
    /// [γ | β]
    pub affine: Arg<'a>,
    /// [batch mean | 1/σ]
    pub saved: Arg<'a>,
    /// [running mean | running var]
    pub running: Arg<'a>,
    /// [dγ | dβ]
    pub daffine: Arg<'a>,
}

impl BnKernel {
    pub fn new(_gpu: &Gpu) -> Self {
        let src = include_str!("batchnorm.wgsl");
        let k = |entry| Specialized::new(entry, src, entry, SLOTS);
        Self { stats: k("stats"), normalize: k("normalize"), eval: k("eval"), backward_reduce: k("backward_reduce"), backward_dx: k("backward_dx") }
    }

    #[allow(clippy::too_many_arguments)]
    fn bind(&self, gpu: &Gpu, kernel: &Specialized, a: &BnArgs, [n, c, hw]: [usize; 3], eps: f32, momentum: f32, groups: [u32; 3]) -> Dispatch {
        let params = gpu.uniform("bn", &[(n * c * hw) as u32, c as u32, hw as u32, n as u32, f(eps), f(momentum)]);
        let shape = [("BATCH", n as f64), ("C", c as f64), ("HW", hw as f64)];
        kernel.bind(gpu, &shape, &[(&params).into(), a.x, a.y, a.xhat, a.affine, a.saved, a.running, a.daffine], groups)
    }

    /// Batch statistics (and running-stat update), then normalisation. `shape` = [N, C, H·W].
    pub fn forward_train(&self, gpu: &Gpu, a: &BnArgs, shape: [usize; 3], eps: f32, momentum: f32) -> [Dispatch; 2] {
        let total = shape.iter().product();
        [
            self.bind(gpu, &self.stats, a, shape, eps, momentum, [shape[1] as u32, 1, 1]),
            self.bind(gpu, &self.normalize, a, shape, eps, momentum, groups_1d(total)),
        ]
    }

    pub fn forward_eval(&self, gpu: &Gpu, a: &BnArgs, shape: [usize; 3], eps: f32) -> Dispatch {
        self.bind(gpu, &self.eval, a, shape, eps, 0.0, groups_1d(shape.iter().product()))
    }

    /// dγ, dβ per channel, then dx. `a.x` = dy, `a.y` = dx.
    pub fn backward(&self, gpu: &Gpu, a: &BnArgs, shape: [usize; 3]) -> [Dispatch; 2] {
        let total = shape.iter().product();
        [
            self.bind(gpu, &self.backward_reduce, a, shape, 0.0, 0.0, [shape[1] as u32, 1, 1]),
            self.bind(gpu, &self.backward_dx, a, shape, 0.0, 0.0, groups_1d(total)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::check::{REDUCTION, TRANSCENDENTAL, assert_gpu_matches_cpu, check_finite_diff, random, run, test_gpu};
    use ndarray::{Array1, concatenate};

    #[test]
    fn train_eval_and_backward_match_cpu() {
        let Some(gpu) = test_gpu() else { return };
        let (n, c, h, w) = (7, 5, 11, 9); // N·H·W = 693 per channel: several passes of 256
        let x = Array4::from_shape_vec((n, c, h, w), random(n * c * h * w, 23)).unwrap() * 3.0 + 1.0;
        let dy = Array4::from_shape_vec((n, c, h, w), random(n * c * h * w, 24)).unwrap();
        let gamma = Array1::from(random(c, 25)) + 1.0;
        let beta = Array1::from(random(c, 26));
        let (mut rm, mut rv) = (Array1::from(random(c, 27)), Array1::from(random(c, 28)) + 2.0);
        let running0 = concatenate![ndarray::Axis(0), rm, rv];
        let (y, cache) = cpu_forward_train(x.view(), gamma.view(), beta.view(), rm.view_mut(), rv.view_mut(), 1e-5, 0.1);
        let (dx, dgamma, dbeta) = cpu_backward(dy.view(), gamma.view(), &cache);
        let y_eval = cpu_forward_eval(x.view(), gamma.view(), beta.view(), rm.view(), rv.view(), 1e-5);

        let bytes = (x.len() * 4) as u64;
        let gx = gpu.upload("x", x.as_slice().unwrap());
        let gdy = gpu.upload("dy", dy.as_slice().unwrap());
        let (gy, gxhat, gdx, gyeval) = (gpu.zeros("y", bytes), gpu.zeros("xhat", bytes), gpu.zeros("dx", bytes), gpu.zeros("ye", bytes));
        let gaff = gpu.upload("affine", concatenate![ndarray::Axis(0), gamma, beta].as_slice().unwrap());
        let grun = gpu.upload("running", running0.as_slice().unwrap());
        let (gsaved, gdaff) = (gpu.zeros("saved", (2 * c * 4) as u64), gpu.zeros("daffine", (2 * c * 4) as u64));
        let k = BnKernel::new(&gpu);
        let fwd = BnArgs { x: (&gx).into(), y: (&gy).into(), xhat: (&gxhat).into(), affine: (&gaff).into(), saved: (&gsaved).into(), running: (&grun).into(), daffine: (&gdaff).into() };
        let bwd = BnArgs { x: (&gdy).into(), y: (&gdx).into(), ..fwd };
        let ev = BnArgs { y: (&gyeval).into(), ..fwd };
        let shape = [n, c, h * w];
        let [s, norm] = k.forward_train(&gpu, &fwd, shape, 1e-5, 0.1);
        let [br, bdx] = k.backward(&gpu, &bwd, shape);
        let e = k.forward_eval(&gpu, &ev, shape, 1e-5);
        run(&gpu, &[&s, &norm, &br, &bdx, &e]);

        assert_gpu_matches_cpu("bn_train", &gpu.read_f32(&gy), y.as_slice().unwrap(), TRANSCENDENTAL);
        assert_gpu_matches_cpu("bn_running", &gpu.read_f32(&grun), concatenate![ndarray::Axis(0), rm, rv].as_slice().unwrap(), REDUCTION);
        assert_gpu_matches_cpu("bn_daffine", &gpu.read_f32(&gdaff), concatenate![ndarray::Axis(0), dgamma, dbeta].as_slice().unwrap(), TRANSCENDENTAL);
        assert_gpu_matches_cpu("bn_dx", &gpu.read_f32(&gdx), dx.as_slice().unwrap(), TRANSCENDENTAL);
        assert_gpu_matches_cpu("bn_eval", &gpu.read_f32(&gyeval), y_eval.as_slice().unwrap(), TRANSCENDENTAL);
    }

    #[test]
    fn cpu_backward_matches_finite_differences() {
        let (n, c, h, w) = (3, 2, 3, 3);
        let x = random(n * c * h * w, 29);
        let r = Array4::from_shape_vec((n, c, h, w), random(n * c * h * w, 30)).unwrap();
        let gamma = Array1::from(vec![1.5f32, 0.7]);
        let beta = Array1::from(vec![0.1f32, -0.2]);
        let loss = |v: &[f32]| {
            let (mut rm, mut rv) = (Array1::zeros(c), Array1::ones(c));
            let xa = Array4::from_shape_vec((n, c, h, w), v.to_vec()).unwrap();
            let (y, _) = cpu_forward_train(xa.view(), gamma.view(), beta.view(), rm.view_mut(), rv.view_mut(), 1e-5, 0.1);
            (&y * &r).iter().map(|&v| v as f64).sum()
        };
        let (mut rm, mut rv) = (Array1::zeros(c), Array1::ones(c));
        let xa = Array4::from_shape_vec((n, c, h, w), x.clone()).unwrap();
        let (_, cache) = cpu_forward_train(xa.view(), gamma.view(), beta.view(), rm.view_mut(), rv.view_mut(), 1e-5, 0.1);
        let (dx, _, _) = cpu_backward(r.view(), gamma.view(), &cache);
        check_finite_diff("batchnorm", &x, dx.as_slice().unwrap(), 54, loss);
    }
}
