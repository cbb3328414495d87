//! The CPU reference backend: runs an [`Architecture`] with the kernels' CPU twins (ndarray,
//! im2col + matrixmultiply, rayon over the batch). It is the correctness anchor for the GPU path
//! and the exporter's parity test, and a usable (slower) training backend.

use ndarray::{Array2, Array4, ArrayD, ArrayView4, ArrayViewD, Ix1, Ix2, Ix4, IxDyn};

use super::{Architecture, Layer, Weights};
use crate::kernels::{batchnorm, conv2d, dropout, gap, maxpool, relu, rng};

/// Makes glibc's malloc keep freed memory for reuse instead of returning it to the kernel. A
/// training step allocates and frees tens of MB of im2col columns per layer; by default glibc
/// maps and unmaps blocks that large each time, and the page faults cost ~14% of training CPU
/// (1.8M faults and 7.8 s of system time in a 63 s run; 55k and 0.4 s with this). The process
/// keeps its peak heap, which is fine for a trainer. Does nothing on other platforms.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Logits [N, classes] in eval mode (running batch-norm stats, no dropout).
/// `x` is the normalised input [N, C, H, W] (see the module docs of [`super`]).
pub fn forward_eval(arch: &Architecture, w: &Weights, x: ArrayView4<f32>) -> Array2<f32> {
    let mut w = w.clone();
    let mut ctx = Ctx { weights: &mut w, train: None, dropout_counter: 0 };
    let (y, _) = run(&arch.layers, "", x.into_dyn().to_owned(), &mut ctx);
    y.into_dimensionality::<Ix2>().expect("model must end in [N, classes]")
}

/// What backward needs from forward, one entry per layer (nested for residual blocks).
pub enum Cache {
    Conv { x: Array4<f32> },
    Bn(batchnorm::BnCache),
    Relu { y: ArrayD<f32> },
    MaxPool { arg: Array4<u32>, hw: [usize; 2] },
    Dropout { seed: u32, p: f32 },
    Gap { hw: [usize; 2] },
    Flatten { shape: Vec<usize> },
    Linear { x: Array2<f32> },
    Residual { body: Vec<Cache>, shortcut: Vec<Cache> },
    None,
}

struct Ctx<'a> {
    weights: &'a mut Weights,
    /// Some(step seed) in training mode.
    train: Option<u32>,
    dropout_counter: u64,
}

fn view<'a>(w: &'a Weights, name: &str) -> ArrayViewD<'a, f32> {
    w.get(name).unwrap_or_else(|| panic!("missing tensor {name}")).view()
}

fn run(layers: &[Layer], prefix: &str, mut x: ArrayD<f32>, ctx: &mut Ctx) -> (ArrayD<f32>, Vec<Cache>) {
    let mut caches = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        let p = format!("{prefix}{i}");
        let (y, cache) = run_layer(layer, &p, x, ctx);
        caches.push(cache);
        x = y;
    }
    (x, caches)
}

fn as4(x: &ArrayD<f32>) -> ArrayView4<'_, f32> {
    x.view().into_dimensionality::<Ix4>().expect("expected a [N, C, H, W] tensor")
}

fn run_layer(layer: &Layer, p: &str, x: ArrayD<f32>, ctx: &mut Ctx) -> (ArrayD<f32>, Cache) {
    let train = ctx.train.is_some();
    match *layer {
        Layer::Conv2d { stride, pad, .. } => {
            let w = &*ctx.weights;
            let wt = view(w, &format!("{p}.weight")).into_dimensionality::<Ix4>().unwrap();
            let b = view(w, &format!("{p}.bias")).into_dimensionality::<Ix1>().unwrap();
            let y = conv2d::cpu_forward(as4(&x), wt, b, stride, pad).into_dyn();
            let cache = if train { Cache::Conv { x: x.into_dimensionality().unwrap() } } else { Cache::None };
            (y, cache)
        }
        Layer::BatchNorm2d { eps, momentum, .. } => {
            let w = &mut *ctx.weights;
            let gamma = w[&format!("{p}.gamma")].clone().into_dimensionality::<Ix1>().unwrap();
            let beta = w[&format!("{p}.beta")].clone().into_dimensionality::<Ix1>().unwrap();
            if train {
                let mut rm = w.remove(&format!("{p}.running_mean")).unwrap().into_dimensionality::<Ix1>().unwrap();
                let mut rv = w.remove(&format!("{p}.running_var")).unwrap().into_dimensionality::<Ix1>().unwrap();
                let (y, cache) = batchnorm::cpu_forward_train(as4(&x), gamma.view(), beta.view(), rm.view_mut(), rv.view_mut(), eps, momentum);
                w.insert(format!("{p}.running_mean"), rm.into_dyn());
                w.insert(format!("{p}.running_var"), rv.into_dyn());
                (y.into_dyn(), Cache::Bn(cache))
            } else {
                let rm = view(w, &format!("{p}.running_mean")).into_dimensionality::<Ix1>().unwrap();
                let rv = view(w, &format!("{p}.running_var")).into_dimensionality::<Ix1>().unwrap();
                let y = batchnorm::cpu_forward_eval(as4(&x), gamma.view(), beta.view(), rm, rv, eps);
                (y.into_dyn(), Cache::None)
            }
        }
        Layer::Relu => {
            let y = relu::cpu_forward(x.view());
            let cache = if train { Cache::Relu { y: y.clone() } } else { Cache::None };
            (y, cache)
        }
        Layer::MaxPool2d { kernel, stride } => {
            let (_, _, h, w) = as4(&x).dim();
            let (y, arg) = maxpool::cpu_forward(as4(&x), kernel, stride);
            (y.into_dyn(), Cache::MaxPool { arg, hw: [h, w] })
        }
        Layer::Dropout { p: prob } => match ctx.train {
            Some(step_seed) => {
                let seed = rng::derive_seed(step_seed as u64, ctx.dropout_counter);
                ctx.dropout_counter += 1;
                (dropout::cpu_apply(x.view(), prob, seed), Cache::Dropout { seed, p: prob })
            }
            None => (x, Cache::None),
        },
        Layer::GlobalAvgPool => {
            let (_, _, h, w) = as4(&x).dim();
            (gap::cpu_forward(as4(&x)).into_dyn(), Cache::Gap { hw: [h, w] })
        }
        Layer::Flatten => {
            let shape = x.shape().to_vec();
            let n = shape[0];
            let flat = x.as_standard_layout().into_owned().into_shape_with_order(IxDyn(&[n, shape[1..].iter().product()])).unwrap();
            (flat, Cache::Flatten { shape })
        }
        Layer::Linear { .. } => {
            let w = &*ctx.weights;
            let wt = view(w, &format!("{p}.weight")).into_dimensionality::<Ix2>().unwrap();
            let b = view(w, &format!("{p}.bias")).into_dimensionality::<Ix1>().unwrap();
            let x2 = x.into_dimensionality::<Ix2>().expect("Linear wants [N, features]");
            let y = x2.dot(&wt.t()) + b;
            let cache = if train { Cache::Linear { x: x2 } } else { Cache::None };
            (y.into_dyn(), cache)
        }
        Layer::Residual { ref body, ref shortcut } => {
            let (yb, cb) = run(body, &format!("{p}.body."), x.clone(), ctx);
            let (ys, cs) = run(shortcut, &format!("{p}.shortcut."), x, ctx);
            (yb + ys, Cache::Residual { body: cb, shortcut: cs })
        }
    }
}

/// Training-mode forward: logits and the caches for [`backward`]. Updates batch-norm running
/// statistics in `w`. `step_seed` drives dropout.
pub fn forward_train(arch: &Architecture, w: &mut Weights, x: ArrayView4<f32>, step_seed: u32) -> (Array2<f32>, Vec<Cache>) {
    let mut ctx = Ctx { weights: w, train: Some(step_seed), dropout_counter: 0 };
    let (y, caches) = run(&arch.layers, "", x.into_dyn().to_owned(), &mut ctx);
    (y.into_dimensionality::<Ix2>().expect("model must end in [N, classes]"), caches)
}

/// Gradients of every trainable tensor given d(loss)/d(logits). The input gradient is not
/// computed (the first conv skips its backward-data product).
pub fn backward(arch: &Architecture, w: &Weights, caches: Vec<Cache>, dlogits: Array2<f32>) -> Weights {
    let mut grads = Weights::new();
    back(&arch.layers, "", w, caches, dlogits.into_dyn(), &mut grads, false);
    grads
}

/// Backward through `layers`; returns d input, which is only meaningful when `need_dx`.
fn back(layers: &[Layer], prefix: &str, w: &Weights, caches: Vec<Cache>, mut dy: ArrayD<f32>, grads: &mut Weights, need_dx: bool) -> ArrayD<f32> {
    for (i, (layer, cache)) in layers.iter().zip(caches).enumerate().rev() {
        let p = format!("{prefix}{i}");
        let need_dx = need_dx || i > 0;
        dy = match (layer, cache) {
            (&Layer::Conv2d { stride, pad, .. }, Cache::Conv { x }) => {
                let wt = view(w, &format!("{p}.weight")).into_dimensionality::<Ix4>().unwrap();
                let g = conv2d::cpu_backward(x.view(), wt, as4(&dy), stride, pad, need_dx);
                grads.insert(format!("{p}.weight"), g.dw.into_dyn());
                grads.insert(format!("{p}.bias"), g.db.into_dyn());
                g.dx.map_or_else(|| ArrayD::zeros(IxDyn(&[0])), |dx| dx.into_dyn())
            }
            (Layer::BatchNorm2d { .. }, Cache::Bn(cache)) => {
                let gamma = view(w, &format!("{p}.gamma")).into_dimensionality::<Ix1>().unwrap();
                let (dx, dgamma, dbeta) = batchnorm::cpu_backward(as4(&dy), gamma, &cache);
                grads.insert(format!("{p}.gamma"), dgamma.into_dyn());
                grads.insert(format!("{p}.beta"), dbeta.into_dyn());
                dx.into_dyn()
            }
            (Layer::Relu, Cache::Relu { y }) => relu::cpu_backward(y.view(), dy.view()),
            (Layer::MaxPool2d { .. }, Cache::MaxPool { arg, hw }) => maxpool::cpu_backward(as4(&dy), arg.view(), hw).into_dyn(),
            (Layer::Dropout { .. }, Cache::Dropout { seed, p: prob }) => dropout::cpu_apply(dy.view(), prob, seed),
            (Layer::GlobalAvgPool, Cache::Gap { hw }) => {
                gap::cpu_backward(dy.view().into_dimensionality::<Ix2>().unwrap(), hw).into_dyn()
            }
            (Layer::Flatten, Cache::Flatten { shape }) => dy.as_standard_layout().into_owned().into_shape_with_order(IxDyn(&shape)).unwrap(),
            (Layer::Linear { .. }, Cache::Linear { x }) => {
                let wt = view(w, &format!("{p}.weight")).into_dimensionality::<Ix2>().unwrap();
                let dy2 = dy.into_dimensionality::<Ix2>().unwrap();
                grads.insert(format!("{p}.weight"), dy2.t().dot(&x).into_dyn());
                grads.insert(format!("{p}.bias"), dy2.sum_axis(ndarray::Axis(0)).into_dyn());
                dy2.dot(&wt).into_dyn()
            }
            (Layer::Residual { body, shortcut }, Cache::Residual { body: cb, shortcut: cs }) => {
                let db = back(body, &format!("{p}.body."), w, cb, dy.clone(), grads, true);
                let ds = back(shortcut, &format!("{p}.shortcut."), w, cs, dy, grads, true);
                db + ds
            }
            (layer, _) => panic!("cache does not match layer {layer:?} at {p} (was forward run in train mode?)"),
        };
    }
    dy
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::check::{check_finite_diff_step, random};
    use crate::kernels::softmax_xent;
    use crate::model::{init_weights, zoo};

    /// Whole-model gradients (conv, batch-norm, pooling, residual joins, linear) against
    /// central differences of the training-mode loss. Dropout is disabled by p = 0 so the loss is
    /// a deterministic function of the weights.
    #[test]
    fn model_gradients_match_finite_differences() {
        for name in ["cnn", "resnet"] {
            let mut arch = zoo(name, [1, 8, 8], 3).unwrap();
            for l in arch.layers.iter_mut() {
                if let Layer::Dropout { p } = l {
                    *p = 0.0;
                }
            }
            let weights = init_weights(&arch, 3);
            let x = Array4::from_shape_vec((4, 1, 8, 8), random(256, 60)).unwrap();
            let labels = [0u32, 1, 2, 1];
            let loss_of = |w: &Weights| {
                let mut w = w.clone();
                let (logits, _) = forward_train(&arch, &mut w, x.view(), 0);
                let out = softmax_xent::cpu_forward_backward(logits.view(), &labels, 0.1);
                out.loss.iter().map(|&v| v as f64).sum::<f64>() / labels.len() as f64
            };
            let mut w = weights.clone();
            let (logits, caches) = forward_train(&arch, &mut w, x.view(), 0);
            let out = softmax_xent::cpu_forward_backward(logits.view(), &labels, 0.1);
            let grads = backward(&arch, &weights, caches, out.dlogits);
            for (name_t, g) in &grads {
                let base = weights[name_t].as_slice().unwrap().to_vec();
                let loss = |v: &[f32]| {
                    let mut w = weights.clone();
                    w.insert(name_t.clone(), ArrayD::from_shape_vec(weights[name_t].raw_dim(), v.to_vec()).unwrap());
                    loss_of(&w)
                };
                check_finite_diff_step(&format!("{name} {name_t}"), &base, g.as_slice().unwrap(), 6, 1e-3, loss);
            }
        }
    }

    #[test]
    fn eval_mode_is_batch_independent() {
        let arch = zoo("resnet", [1, 12, 12], 4).unwrap();
        let w = init_weights(&arch, 1);
        let x = Array4::from_shape_vec((3, 1, 12, 12), random(3 * 144, 61)).unwrap();
        let all = forward_eval(&arch, &w, x.view());
        let one = forward_eval(&arch, &w, x.slice(ndarray::s![1..2, .., .., ..]));
        assert!(all.row(1).iter().zip(one.row(0)).all(|(a, b)| (a - b).abs() < 1e-5));
    }
}
