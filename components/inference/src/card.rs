//! The model card: the JSON file beside each model in `models/` that says how to feed it and how
//! to read its output. The trainer writes it on export; the inference side serves a model if and
//! only if its card is valid.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// URL-safe name, used in `/predict/{name}`.
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    /// ONNX file, relative to the card's directory.
    pub file: String,
    /// Optional NNEF archive (tract-nnef `.nnef.tgz`) with the same graph, relative to the card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nnef_file: Option<String>,
    /// Hex sha256 of `file`.
    pub sha256: String,
    pub input: InputSpec,
    pub output: OutputSpec,
    /// Index → label; `classes.len()` must equal the model's output width.
    pub classes: Vec<Class>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<Training>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Model input without the batch dimension, NCHW order: [channels, height, width].
    pub shape: [usize; 3],
    /// How one uint8 pixel p becomes the float input: ((p * scale) - mean[c]) / std[c].
    pub normalization: Normalization,
    /// How a grayscale image fills `shape[0]` channels.
    #[serde(default)]
    pub channels: ChannelMode,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    /// Usually 1/255.
    pub scale: f32,
    /// One per channel (or one value for all).
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelMode {
    /// One input channel.
    #[default]
    Grayscale,
    /// The model wants 3 channels: the grayscale image is copied into each.
    ReplicateGrayscale,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub kind: OutputKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// Raw scores: the server applies softmax.
    Logits,
    /// Already a probability distribution.
    Probabilities,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Class {
    pub index: usize,
    /// What a person reads: "あ" for K49, "Sneaker" for Fashion-MNIST.
    pub label: String,
    /// Unicode codepoint for character classes ("U+3042"), else absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codepoint: Option<String>,
}

/// Test-set metrics measured by the trainer's evaluation of the exported weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub dataset: String,
    pub split: String,
    pub samples: usize,
    pub accuracy: f64,
    pub balanced_accuracy: f64,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
}

/// How the model was produced, so a result can be re-made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Training {
    pub command: String,
    pub architecture: String,
    pub parameters: usize,
    pub epochs: usize,
    pub backend: String,
    pub adapter: String,
    pub wall_time_s: f64,
    pub images_per_s: f64,
    pub created_at: String,
    pub seed: u64,
}
