//! Model architectures as data: the trainer runs them (GPU and CPU), the exporter turns them into
//! ONNX/NNEF, and the run directory stores them as JSON. Shared contract between `model/` (compute)
//! and `export/` (ONNX): change both together.
//!
//! Parameter naming: every parameterised layer at path `p` (indices joined by '.', with `body` /
//! `shortcut` for residual branches, e.g. "3.body.0") owns tensors named `"{p}.{tensor}"`:
//! - Conv2d: `weight` [out_ch, in_ch, k, k], `bias` [out_ch]
//! - BatchNorm2d: `gamma` [ch], `beta` [ch]; buffers `running_mean` [ch], `running_var` [ch]
//! - Linear: `weight` [out_features, in_features], `bias` [out_features]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Layer {
    /// Square kernel, same stride and zero padding on both axes. NCHW.
    Conv2d { in_ch: usize, out_ch: usize, kernel: usize, stride: usize, pad: usize },
    /// Training: batch statistics, running stats updated with `momentum` (PyTorch convention:
    /// running = (1 - momentum) * running + momentum * batch, unbiased variance for running_var).
    /// Eval: (x - running_mean) / sqrt(running_var + eps) * gamma + beta.
    BatchNorm2d { ch: usize, eps: f32, momentum: f32 },
    Relu,
    /// No padding; floor division of the output size.
    MaxPool2d { kernel: usize, stride: usize },
    /// Inverted dropout in training, identity in eval and in the exported graph.
    Dropout { p: f32 },
    /// [N, C, H, W] → [N, C].
    GlobalAvgPool,
    /// [N, C, H, W] → [N, C*H*W] (row-major, same as ONNX Flatten axis=1).
    Flatten,
    Linear { in_features: usize, out_features: usize },
    /// y = body(x) + shortcut(x); an empty shortcut is the identity.
    Residual { body: Vec<Layer>, shortcut: Vec<Layer> },
}

/// A whole classifier: input [N, C, H, W] → logits [N, classes].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Architecture {
    /// Registry name: "cnn", "resnet", ...
    pub name: String,
    /// [channels, height, width] of one input image.
    pub input: [usize; 3],
    pub classes: usize,
    pub layers: Vec<Layer>,
}

/// Named tensors (parameters and batch-norm buffers), row-major f32.
pub type Weights = BTreeMap<String, ndarray::ArrayD<f32>>;
