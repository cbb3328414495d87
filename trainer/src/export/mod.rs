//! Export of a trained model for the edge: ONNX ([`onnx`]), the same graph as NNEF ([`nnef`]),
//! and the model card the inference side reads. [`evaluate`] re-measures an exported model's
//! metrics through `kana-inference`, exactly as the server will run it.
//!
//! Files (flat, because the server loads `models/*.card.json`):
//! `<out>/<name>.onnx`, `<out>/<name>.nnef.tgz`, `<out>/<name>.card.json`.

pub mod evaluate;
pub mod nnef;
pub mod onnx;

#[cfg(test)]
mod parity_tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use kana_inference::card::{
    CARD_SUFFIX, ChannelMode, Class, InputSpec, ModelCard, Normalization, OutputKind, OutputSpec, Training,
};
use ndarray::{Array2, ArrayView4, Ix2};
use tract_onnx::prelude::*;

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
    let nnef = nnef::onnx_to_nnef_tgz(&onnx, arch.input).context("converting to NNEF")?;
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
        nnef_sha256: Some(kana_inference::model::sha256_hex(&nnef)),
        sha256: kana_inference::model::sha256_hex(&onnx),
        input: InputSpec {
            shape: arch.input,
            normalization: info.normalization,
            channels: if arch.input[0] == 1 { ChannelMode::Grayscale } else { ChannelMode::ReplicateGrayscale },
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
    let card_path = out_dir.join(format!("{}{CARD_SUFFIX}", card.name));
    write_card(&card_path, &card)?;
    Ok(Exported { card_path, onnx_path, nnef_path, card })
}

pub fn write_card(path: &Path, card: &ModelCard) -> Result<()> {
    let mut json = serde_json::to_string_pretty(card)?;
    json.push('\n');
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}

pub fn read_card(path: &Path) -> Result<ModelCard> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// ONNX bytes as a typed tract model with input [N, C, H, W].
pub(crate) fn typed_model(onnx: &[u8], [c, h, w]: [usize; 3]) -> Result<TypedModel> {
    let model = tract_onnx::onnx().model_for_read(&mut std::io::Cursor::new(onnx))?;
    let n = model.sym("N");
    Ok(model
        .with_input_fact(0, f32::fact(tract_onnx::tract_core::dims!(n, c, h, w)).into())?
        .into_typed()?)
}

/// ONNX bytes as an optimised, runnable tract plan.
pub fn onnx_plan(onnx: &[u8], input: [usize; 3]) -> Result<Arc<TypedRunnableModel>> {
    Ok(typed_model(onnx, input)?.into_optimized()?.into_runnable()?)
}

/// Runs a plan on normalised input [N, C, H, W] → [N, classes].
pub fn run_plan(plan: &Arc<TypedRunnableModel>, x: ArrayView4<f32>) -> Result<Array2<f32>> {
    let input = Tensor::from(x.to_owned());
    let out = plan.run(tvec!(input.into_tvalue()))?;
    let view = out[0].to_plain_array_view::<f32>()?;
    Ok(view.to_owned().into_dimensionality::<Ix2>()?)
}
