//! Export of a trained model for the edge: ONNX ([`onnx`]), the same graph as NNEF (tract-nnef's
//! `.nnef.tgz`, converted by `kana_inference::export::nnef_tgz`), and the model card the inference
//! side reads. [`evaluate`] re-measures an exported model's metrics through `kana-inference`,
//! exactly as the server will run it.
//!
//! Files (flat, because the server loads `models/*.card.json`):
//! `<out>/<name>.onnx`, `<out>/<name>.nnef.tgz`, `<out>/<name>.card.json`.

pub mod evaluate;
pub mod onnx;

#[cfg(test)]
mod parity_tests;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kana_inference::card::{ChannelMode, Class, InputSpec, ModelCard, Normalization, OutputKind, OutputSpec, Training};
use kana_inference::model::sha256_hex;

use crate::arch::{Architecture, Weights};

/// What goes into a card besides the graph.
#[derive(Clone, Debug)]
pub struct CardInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub classes: Vec<Class>,
    pub normalization: Normalization,
    pub training: Option<Training>,
    pub aliases: Vec<String>,
    pub training_data: Option<String>,
    pub attribution: Option<String>,
}

/// Paths of the exported files and the card as written.
#[derive(Clone, Debug)]
pub struct Exported {
    pub card_path: PathBuf,
    pub onnx_path: PathBuf,
    pub nnef_path: PathBuf,
    pub card: ModelCard,
}

/// Writes the ONNX, NNEF and card (without metrics; see [`evaluate::measure_and_record`]).
pub fn export(arch: &Architecture, weights: &Weights, info: CardInfo, out_dir: &Path) -> Result<Exported> {
    anyhow::ensure!(
        info.classes.len() == arch.classes,
        "{} class labels for a model with {} outputs",
        info.classes.len(),
        arch.classes
    );
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let onnx = onnx::to_onnx_bytes(arch, weights)?;
    let nnef = kana_inference::export::nnef_tgz(&onnx, arch.input).context("converting to NNEF")?;
    let onnx_file = format!("{}.onnx", info.name);
    let nnef_file = format!("{}.nnef.tgz", info.name);
    let onnx_path = out_dir.join(&onnx_file);
    let nnef_path = out_dir.join(&nnef_file);
    std::fs::write(&onnx_path, &onnx)?;
    std::fs::write(&nnef_path, &nnef)?;
    let card = ModelCard {
        name: info.name.clone(),
        version: info.version,
        description: info.description,
        file: onnx_file,
        nnef_file: Some(nnef_file),
        nnef_sha256: Some(sha256_hex(&nnef)),
        sha256: sha256_hex(&onnx),
        input: InputSpec {
            shape: arch.input,
            normalization: info.normalization,
            channels: ChannelMode::for_channels(arch.input[0]),
        },
        output: OutputSpec { kind: OutputKind::Logits },
        classes: info.classes,
        metrics: None,
        training: info.training,
        aliases: info.aliases,
        training_data: info.training_data,
        attribution: info.attribution,
    };
    card.validate().map_err(|e| anyhow::anyhow!("invalid card: {e}"))?;
    let card_path = card.write(out_dir).with_context(|| format!("writing {}'s card into {}", card.name, out_dir.display()))?;
    Ok(Exported { card_path, onnx_path, nnef_path, card })
}

pub fn write_card(path: &Path, card: &ModelCard) -> Result<()> {
    card.write_to(path).with_context(|| format!("writing {}", path.display()))
}

pub fn read_card(path: &Path) -> Result<ModelCard> {
    ModelCard::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}
