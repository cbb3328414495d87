//! The model card: the JSON file beside each model in `models/` that says how to feed it and how
//! to read its output. The trainer writes it on export; the inference side serves a model if and
//! only if its card is valid.
//!
//! File naming: `models/<anything>.card.json`; `file`/`nnef_file` are relative to the card.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// URL-safe name, used in `/predict/{name}`.
    pub name: String,
    /// Other URL-safe names the model answers to (`"cnn"`, so the reference server's
    /// `/predict/cnn` works unchanged). A name or alias may belong to one model only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    pub version: String,
    #[serde(default)]
    pub description: String,
    /// ONNX file, relative to the card's directory.
    pub file: String,
    /// Optional NNEF archive (tract-nnef `.nnef.tgz`) with the same graph, relative to the card.
    /// Not served: the ONNX file loads faster (see `Model::load` and benches/README.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nnef_file: Option<String>,
    /// Hex sha256 of `nnef_file`; checked when the archive is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nnef_sha256: Option<String>,
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
    /// What the model was trained on, in words (e.g. synthetic data, not the real set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_data: Option<String>,
    /// Credit the training data's licence requires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution: Option<String>,
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

/// Suffix that marks a model card in a models directory.
pub const CARD_SUFFIX: &str = ".card.json";

impl ModelCard {
    /// Checks what can be checked without the weights: names, shapes, normalization, classes.
    /// `Model::load` adds the file, sha256 and graph checks.
    pub fn validate(&self) -> Result<(), String> {
        let url_safe = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        for name in std::iter::once(&self.name).chain(&self.aliases) {
            if !url_safe(name) {
                return Err(format!("name '{name}' must be non-empty ASCII letters, digits, '-', '_' or '.'"));
            }
        }
        if self.version.trim().is_empty() {
            return Err("version is empty".into());
        }
        let relative = |f: &str| !f.is_empty() && !f.starts_with('/') && !f.split(['/', '\\']).any(|p| p == "..");
        if !relative(&self.file) || self.nnef_file.as_deref().is_some_and(|f| !relative(f)) {
            return Err("weight files must be relative paths inside the models directory".into());
        }
        if self.sha256.len() != 64 || !self.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("sha256 '{}' is not 64 hex digits", self.sha256));
        }
        let [c, h, w] = self.input.shape;
        if c == 0 || h == 0 || w == 0 || h > 1024 || w > 1024 || c > 4 {
            return Err(format!("input shape {:?} is not [1..=4, 1..=1024, 1..=1024]", self.input.shape));
        }
        if !crate::model::channels_ok(self.input.channels, c) {
            return Err(format!("channels mode {:?} does not fit {c} input channels", self.input.channels));
        }
        let n = &self.input.normalization;
        for (what, v) in [("mean", &n.mean), ("std", &n.std)] {
            if v.len() != 1 && v.len() != c {
                return Err(format!("normalization.{what} has {} values, expected 1 or {c}", v.len()));
            }
        }
        if !(n.scale.is_finite() && n.scale > 0.0)
            || n.mean.iter().any(|m| !m.is_finite())
            || n.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
        {
            return Err("normalization needs a positive scale, finite means and positive stds".into());
        }
        if self.classes.is_empty() {
            return Err("no classes".into());
        }
        if let Some((i, c)) = self.classes.iter().enumerate().find(|(i, c)| c.index != *i) {
            return Err(format!("classes[{i}] has index {}; classes must be listed in index order", c.index));
        }
        Ok(())
    }
}
