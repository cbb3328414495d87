//! The model card: the JSON file beside each model in `models/` that says how to feed it and how
//! to read its output. The trainer writes it on export; the inference side serves a model if and
//! only if its card is valid.
//!
//! File naming: `models/<anything>.card.json`; `file`/`nnef_file` are relative to the card.

use std::path::{Path, PathBuf};

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

impl ChannelMode {
    /// How a model with `channels` input channels is fed a grayscale image.
    pub fn for_channels(channels: usize) -> ChannelMode {
        if channels == 1 { ChannelMode::Grayscale } else { ChannelMode::ReplicateGrayscale }
    }

    /// Whether this mode can fill `channels` input channels.
    pub fn fits(self, channels: usize) -> bool {
        match self {
            ChannelMode::Grayscale => channels == 1,
            ChannelMode::ReplicateGrayscale => channels > 1,
        }
    }
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
    /// Reads a card file (not validated: see [`ModelCard::validate`]).
    pub fn read(path: &Path) -> Result<ModelCard, String> {
        let text = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        serde_json::from_slice(&text).map_err(|e| format!("invalid card JSON: {e}"))
    }

    /// Writes the card as `dir/<name>.card.json` (pretty JSON, one final newline); returns the path.
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join(format!("{}{CARD_SUFFIX}", self.name));
        self.write_to(&path)?;
        Ok(path)
    }

    /// Writes the card to `path` (pretty JSON, one final newline).
    pub fn write_to(&self, path: &Path) -> std::io::Result<()> {
        let mut json = serde_json::to_vec_pretty(self)?;
        json.push(b'\n');
        std::fs::write(path, json)
    }

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
        if !self.input.channels.fits(c) {
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

/// Parses a class map in the K49 format (`k49_classmap.csv`): header `index,codepoint,char`, then
/// one row per class in index order.
pub fn classes_from_csv(csv: &str) -> Result<Vec<Class>, String> {
    let mut classes = Vec::new();
    for (line_no, line) in csv.lines().enumerate().skip(1) {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut cols = line.splitn(3, ',');
        let (Some(index), Some(codepoint), Some(label)) = (cols.next(), cols.next(), cols.next()) else {
            return Err(format!("line {}: expected index,codepoint,char", line_no + 1));
        };
        let index: usize = index.parse().map_err(|e| format!("line {}: bad index: {e}", line_no + 1))?;
        if index != classes.len() {
            return Err(format!("line {}: index {index} out of order", line_no + 1));
        }
        classes.push(Class { index, label: label.to_string(), codepoint: Some(codepoint.to_string()) });
    }
    if classes.is_empty() {
        return Err("class map has no classes".into());
    }
    Ok(classes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_k49_class_map_has_49_hiragana_in_order() {
        let k = classes_from_csv(include_str!("../../../fixtures/k49/k49_classmap.csv")).unwrap();
        assert_eq!(k.len(), 49);
        assert_eq!((k[0].label.as_str(), k[0].codepoint.as_deref()), ("あ", Some("U+3042")));
        assert_eq!(k[48].label, "ゝ");
        for c in &k {
            let cp = u32::from_str_radix(&c.codepoint.as_ref().unwrap()[2..], 16).unwrap();
            assert_eq!(c.label.chars().next().unwrap() as u32, cp);
        }
    }

    #[test]
    fn class_maps_with_rows_out_of_order_or_none_are_refused() {
        assert!(classes_from_csv("index,codepoint,char\n1,U+3042,あ\n").unwrap_err().contains("out of order"));
        assert!(classes_from_csv("index,codepoint,char\n").is_err());
        assert!(classes_from_csv("index,codepoint,char\n0,U+3042\n").is_err());
    }
}
