//! Runs an [`Architecture`]: the model zoo, parameter listing and initialisation here; the CPU
//! reference backend in [`cpu`] and the wgpu backend in [`gpu`].
//!
//! Input normalisation (what the model card records): a uint8 pixel p becomes
//! x = (p/255 − mean)/std with [`NORM_MEAN`] and [`NORM_STD`], one grayscale channel.

pub mod cpu;
pub mod gpu;

use ndarray::{ArrayD, IxDyn};

pub use crate::arch::{Architecture, Layer, Weights};
use crate::kernels::rng;

/// Normalisation every zoo model is trained with (x = (p/255 − mean)/std).
pub const NORM_MEAN: f32 = 0.5;
pub const NORM_STD: f32 = 0.5;

/// Models by name. cnn and resnet train on a CPU-only machine in an hour or two; resnet-wide in hours.
/// - `cnn`: 3 conv-bn-relu blocks (32, 64, 128 channels) with two max-pools and a linear head
///   (~0.16M parameters on 28×28, 0.6 MB as f32).
/// - `resnet`: a stem and four residual blocks (32, 64, 64, 128 channels) with batch-norm, global
///   average pool (~0.38M parameters, 1.5 MB; the extra 128-channel block runs at 4×4, so it adds
///   capacity for little compute).
/// - `resnet-wide`: the same at twice the width (64, 128, 128, 256 channels; ~1.5M parameters,
///   6 MB, ~4× the compute), for when `resnet` plateaus and a GPU (or hours of CPU) is at hand.
pub fn zoo(name: &str, input: [usize; 3], classes: usize) -> Option<Architecture> {
    let [c, h, w] = input;
    let layers = match name {
        "cnn" => {
            let (fh, fw) = (h / 4, w / 4);
            vec![
                conv(c, 32, 1),
                bn(32),
                Layer::Relu,
                Layer::MaxPool2d { kernel: 2, stride: 2 },
                conv(32, 64, 1),
                bn(64),
                Layer::Relu,
                Layer::MaxPool2d { kernel: 2, stride: 2 },
                conv(64, 128, 1),
                bn(128),
                Layer::Relu,
                Layer::Flatten,
                Layer::Dropout { p: 0.3 },
                Layer::Linear { in_features: 128 * fh * fw, out_features: classes },
            ]
        }
        // The edge model: speed by design. Strided convolutions instead of pooling, narrow early
        // layers where the maps are large; ~3.7 M multiply-adds and ~64 k parameters per image
        // (the cnn: ~7.5 M and 156 k).
        "edge" => vec![
            conv(c, 16, 1),
            bn(16),
            Layer::Relu,
            conv(16, 32, 2),
            bn(32),
            Layer::Relu,
            conv(32, 64, 2),
            bn(64),
            Layer::Relu,
            conv(64, 64, 1),
            bn(64),
            Layer::Relu,
            Layer::GlobalAvgPool,
            Layer::Linear { in_features: 64, out_features: classes },
        ],
        "resnet" => resnet(c, classes, 32),
        "resnet-wide" => resnet(c, classes, 64),
        _ => return None,
    };
    Some(Architecture { name: name.to_string(), input, classes, layers })
}

fn conv(in_ch: usize, out_ch: usize, stride: usize) -> Layer {
    Layer::Conv2d { in_ch, out_ch, kernel: 3, stride, pad: 1 }
}

fn bn(ch: usize) -> Layer {
    Layer::BatchNorm2d { ch, eps: 1e-5, momentum: 0.1 }
}

/// Stem (conv, max-pool to half size) then residual blocks at `width`, `2·width` (stride 2),
/// `2·width`, `4·width` (stride 2), global average pool and a linear head.
fn resnet(c: usize, classes: usize, width: usize) -> Vec<Layer> {
    let block = |i: usize, o: usize, stride: usize| Layer::Residual {
        body: vec![conv(i, o, stride), bn(o), Layer::Relu, conv(o, o, 1), bn(o)],
        shortcut: if i == o && stride == 1 {
            vec![]
        } else {
            vec![Layer::Conv2d { in_ch: i, out_ch: o, kernel: 1, stride, pad: 0 }, bn(o)]
        },
    };
    let w = width;
    vec![
        conv(c, w, 1),
        bn(w),
        Layer::Relu,
        Layer::MaxPool2d { kernel: 2, stride: 2 },
        block(w, w, 1),
        Layer::Relu,
        block(w, 2 * w, 2),
        Layer::Relu,
        block(2 * w, 2 * w, 1),
        Layer::Relu,
        block(2 * w, 4 * w, 2),
        Layer::Relu,
        Layer::GlobalAvgPool,
        Layer::Linear { in_features: 4 * w, out_features: classes },
    ]
}

pub const ZOO: &[&str] = &["edge", "cnn", "resnet", "resnet-wide"];

/// Whether a tensor is learned (and weight-decayed) or a running statistic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorKind {
    Trainable { decay: bool },
    Buffer,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: TensorKind,
}

/// Every tensor of the model, in a stable order (depth-first layer order).
pub fn tensors(arch: &Architecture) -> Vec<TensorSpec> {
    fn walk(layers: &[Layer], prefix: &str, out: &mut Vec<TensorSpec>) {
        for (i, layer) in layers.iter().enumerate() {
            let p = format!("{prefix}{i}");
            let mut push = |t: &str, shape: Vec<usize>, kind| out.push(TensorSpec { name: format!("{p}.{t}"), shape, kind });
            match *layer {
                Layer::Conv2d { in_ch, out_ch, kernel, .. } => {
                    push("weight", vec![out_ch, in_ch, kernel, kernel], TensorKind::Trainable { decay: true });
                    push("bias", vec![out_ch], TensorKind::Trainable { decay: false });
                }
                Layer::BatchNorm2d { ch, .. } => {
                    push("gamma", vec![ch], TensorKind::Trainable { decay: false });
                    push("beta", vec![ch], TensorKind::Trainable { decay: false });
                    push("running_mean", vec![ch], TensorKind::Buffer);
                    push("running_var", vec![ch], TensorKind::Buffer);
                }
                Layer::Linear { in_features, out_features } => {
                    push("weight", vec![out_features, in_features], TensorKind::Trainable { decay: true });
                    push("bias", vec![out_features], TensorKind::Trainable { decay: false });
                }
                Layer::Residual { ref body, ref shortcut } => {
                    walk(body, &format!("{p}.body."), out);
                    walk(shortcut, &format!("{p}.shortcut."), out);
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(&arch.layers, "", &mut out);
    out
}

/// Number of learned scalars.
pub fn parameter_count(arch: &Architecture) -> usize {
    tensors(arch)
        .iter()
        .filter(|t| matches!(t.kind, TensorKind::Trainable { .. }))
        .map(|t| t.shape.iter().product::<usize>())
        .sum()
}

/// Kaiming-uniform weights for ReLU nets (bound √(6/fan_in)), zero biases, batch-norm γ = 1,
/// β = 0, running mean 0 / var 1. Deterministic in `seed`.
pub fn init_weights(arch: &Architecture, seed: u64) -> Weights {
    tensors(arch)
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let n: usize = t.shape.iter().product();
            let last = t.name.rsplit('.').next().unwrap_or_default();
            let values: Vec<f32> = match last {
                "weight" => {
                    let fan_in: usize = t.shape[1..].iter().product();
                    let bound = (6.0 / fan_in as f32).sqrt();
                    let s = rng::derive_seed(seed, i as u64);
                    (0..n).map(|j| (rng::uniform(s, j as u32) * 2.0 - 1.0) * bound).collect()
                }
                "gamma" | "running_var" => vec![1.0; n],
                _ => vec![0.0; n],
            };
            (t.name, ArrayD::from_shape_vec(IxDyn(&t.shape), values).expect("shape matches"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoo_models_are_small_and_consistent() {
        for name in ZOO {
            // The edge model is measured with K49's 49 classes (its head grows with them).
            let classes = if *name == "edge" { 49 } else { 10 };
            let arch = zoo(name, [1, 28, 28], classes).unwrap();
            let w = init_weights(&arch, 1);
            assert_eq!(w.len(), tensors(&arch).len());
            // The small model must stay under 1 MB of f32 weights, the deeper one under 2 MB.
            let limit = match *name {
                // Under 300 KB of ONNX for 49 classes.
                "edge" => 290_000,
                "cnn" => 1_000_000,
                "resnet" => 2_000_000,
                _ => 8_000_000,
            };
            let bytes = parameter_count(&arch) * 4;
            assert!(bytes < limit, "{name}: {bytes} bytes");
        }
        assert!(zoo("nope", [1, 28, 28], 10).is_none());
    }

    #[test]
    fn init_is_deterministic_in_seed() {
        let arch = zoo("cnn", [1, 28, 28], 49).unwrap();
        assert_eq!(init_weights(&arch, 3), init_weights(&arch, 3));
        assert_ne!(init_weights(&arch, 3)["0.weight"], init_weights(&arch, 4)["0.weight"]);
    }
}
