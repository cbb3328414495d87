//! A served model: its validated card plus a tract plan, loaded and optimised once with a
//! symbolic batch dimension `N`, so one plan answers any batch size. Large batches are split into
//! chunks because tract's per-image cost grows with very large batches in wasm.
//!
//! The plan is built either at once ([`Model::load`]: tools and tests, which should fail fast) or
//! on the model's first request ([`Model::deferred`]: the components, where every instance would
//! otherwise read, hash and plan every shipped model before its first answer).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::DimLike;

use crate::card::{ModelCard, OutputKind};
use crate::decode::Images;
use crate::error::{InferenceError, InputError, PredictError};

/// Images per tract run. Measured on the reference-size CNN (benches/README.md): in the wasm
/// component 100 images took 174 ms in chunks of 1, 94 ms in chunks of 16, 91 ms in chunks of 32
/// and 128 ms as one batch; natively 16–100 are within noise. Override with the Spin variable
/// `predict_chunk_size`.
pub const DEFAULT_CHUNK_SIZE: usize = 16;

/// Which file the plan was built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightsFormat {
    Onnx,
    Nnef,
}

/// One image's outcome: the best class and, when asked, the `k` best with their probabilities.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// Position in the uploaded batch.
    pub index: usize,
    pub class: usize,
    pub probability: f32,
    /// Best classes first; `top.len() == k` (or 1 when no top-k was requested).
    pub top: Vec<(usize, f32)>,
    /// When the chunk holding this image started running.
    pub started_at: chrono::DateTime<chrono::Utc>,
}

pub struct Model {
    pub card: ModelCard,
    /// Directory holding the card and weights.
    pub dir: PathBuf,
    pub format: WeightsFormat,
    pub chunk_size: usize,
    /// Built once, on [`Model::load`] or on first use; an error is kept so it is not retried.
    plan: OnceLock<Result<Planned, String>>,
}

struct Planned {
    plan: Arc<TypedRunnableModel>,
    /// Time spent reading, checking, optimising and planning the graph.
    load_ms: f64,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("name", &self.card.name).field("format", &self.format).finish()
    }
}

/// Hex sha256 of a file's bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One image's class probabilities and the start time of the chunk it ran in.
pub type ImageProbabilities = (Vec<f32>, chrono::DateTime<chrono::Utc>);

impl Model {
    /// Validates `card` against the files in `dir` and builds the plan from the ONNX file. Every
    /// check that could fail at request time for a bad card is done here instead.
    ///
    /// ONNX even when the card also names an NNEF archive: measured on the reference-size CNN
    /// (benches, `load` group) the ONNX file loads about 4× faster (14 ms vs 62 ms natively).
    pub fn load(card: ModelCard, dir: &Path) -> Result<Model, String> {
        Model::load_as(card, dir, WeightsFormat::Onnx)
    }

    /// As [`Model::load`], from the chosen file (`Nnef` needs the card's `nnef_file`).
    pub fn load_as(card: ModelCard, dir: &Path, format: WeightsFormat) -> Result<Model, String> {
        let model = Model::deferred_as(card, dir, format)?;
        model.plan()?;
        Ok(model)
    }

    /// Checks the card and that its files exist; reading, hashing and planning the weights wait
    /// for the first prediction ([`Model::plan`]), whose error then names what is wrong.
    pub fn deferred(card: ModelCard, dir: &Path) -> Result<Model, String> {
        Model::deferred_as(card, dir, WeightsFormat::Onnx)
    }

    fn deferred_as(card: ModelCard, dir: &Path, format: WeightsFormat) -> Result<Model, String> {
        card.validate()?;
        let files = match format {
            WeightsFormat::Onnx => vec![&card.file],
            WeightsFormat::Nnef => vec![&card.file, card.nnef_file.as_ref().ok_or("the card names no nnef_file")?],
        };
        for file in files {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(format!("cannot read {}: not a file", path.display()));
            }
        }
        Ok(Model { card, dir: dir.to_path_buf(), format, chunk_size: DEFAULT_CHUNK_SIZE, plan: OnceLock::new() })
    }

    /// The tract plan, built on the first call.
    pub fn plan(&self) -> Result<&Arc<TypedRunnableModel>, String> {
        let planned = self.plan.get_or_init(|| {
            let started = Instant::now();
            let plan = Model::build_plan(&self.card, &self.dir, self.format)?;
            Ok(Planned { plan, load_ms: started.elapsed().as_secs_f64() * 1e3 })
        });
        planned.as_ref().map(|p| &p.plan).map_err(Clone::clone)
    }

    /// Milliseconds the plan took to build; `None` before the first use.
    pub fn load_ms(&self) -> Option<f64> {
        self.plan.get().and_then(|p| p.as_ref().ok()).map(|p| p.load_ms)
    }

    /// Why the plan could not be built, once that was tried.
    pub fn load_error(&self) -> Option<&str> {
        self.plan.get().and_then(|p| p.as_ref().err()).map(String::as_str)
    }

    /// Reads the weights, checks them against the card, then optimises and plans the graph. Every
    /// check that could fail at request time for a bad card is done here instead.
    fn build_plan(card: &ModelCard, dir: &Path, format: WeightsFormat) -> Result<Arc<TypedRunnableModel>, String> {
        let onnx_path = dir.join(&card.file);
        let onnx = std::fs::read(&onnx_path).map_err(|e| format!("cannot read {}: {e}", onnx_path.display()))?;
        let digest = sha256_hex(&onnx);
        if !digest.eq_ignore_ascii_case(&card.sha256) {
            return Err(format!("sha256 of {} is {digest}, card says {}", card.file, card.sha256));
        }
        let model = match format {
            WeightsFormat::Nnef => {
                let nnef_file = card.nnef_file.as_deref().ok_or("the card names no nnef_file")?;
                let path = dir.join(nnef_file);
                let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                if let Some(expected) = &card.nnef_sha256 {
                    let digest = sha256_hex(&bytes);
                    if !digest.eq_ignore_ascii_case(expected) {
                        return Err(format!("sha256 of {nnef_file} is {digest}, card says {expected}"));
                    }
                }
                nnef_graph(&bytes).and_then(TypedModel::into_optimized).map_err(|e| format!("NNEF {nnef_file}: {e:#}"))?
            }
            WeightsFormat::Onnx => onnx_graph(&onnx, card.input.shape)
                .and_then(TypedModel::into_optimized)
                .map_err(|e| format!("ONNX {}: {e:#}", card.file))?,
        };
        check_facts(&model, card)?;
        model.into_runnable().map_err(|e| format!("planning: {e:#}"))
    }

    /// Softmax probabilities (or the model's own, for `OutputKind::Probabilities`), one row per
    /// image, with the start time of the chunk each image ran in.
    pub fn probabilities(&self, images: &Images) -> Result<Vec<ImageProbabilities>, PredictError> {
        self.probabilities_chunked(images, self.chunk_size)
    }

    /// As [`Model::probabilities`], running `chunk` images per tract call.
    pub fn probabilities_chunked(
        &self,
        images: &Images,
        chunk: usize,
    ) -> Result<Vec<ImageProbabilities>, PredictError> {
        let [_, h, w] = self.card.input.shape;
        if images.height != h || images.width != w {
            return Err(InputError::WrongShape {
                got: format!("images of {}x{}, model '{}' expects {h}x{w}", images.height, images.width, self.card.name),
            }
            .into());
        }
        let plan = self.plan().map_err(|e| InferenceError(format!("model '{}' cannot be loaded: {e}", self.card.name)))?;
        let mut rows = Vec::with_capacity(images.count);
        let mut state = plan.spawn().map_err(|e| InferenceError(format!("{e:#}")))?;
        let chunk = chunk.max(1);
        let mut start = 0;
        while start < images.count {
            let end = (start + chunk).min(images.count);
            let started_at = chrono::Utc::now();
            let input = self.input_tensor(images, start, end);
            let outputs = state.run(tvec!(input.into_tvalue())).map_err(|e| InferenceError(format!("{e:#}")))?;
            let view = outputs[0].to_plain_array_view::<f32>().map_err(|e| InferenceError(format!("{e:#}")))?;
            let classes = self.card.classes.len();
            let flat: Vec<f32> = view.iter().copied().collect();
            if flat.len() != (end - start) * classes {
                return Err(InferenceError(format!("output of {} values for {} images", flat.len(), end - start)).into());
            }
            for row in flat.chunks(classes) {
                let row = match self.card.output.kind {
                    OutputKind::Logits => softmax(row),
                    OutputKind::Probabilities => row.to_vec(),
                };
                rows.push((row, started_at));
            }
            start = end;
        }
        Ok(rows)
    }

    /// Best class per image, with the `top_k` best when `top_k` is given.
    pub fn predict(&self, images: &Images, top_k: usize) -> Result<Vec<Prediction>, PredictError> {
        self.predict_chunked(images, top_k, self.chunk_size)
    }

    pub fn predict_chunked(&self, images: &Images, top_k: usize, chunk: usize) -> Result<Vec<Prediction>, PredictError> {
        let k = top_k.clamp(1, self.card.classes.len());
        let rows = self.probabilities_chunked(images, chunk)?;
        Ok(rows
            .into_iter()
            .enumerate()
            .map(|(index, (probs, started_at))| {
                let top = top_k_of(&probs, k);
                Prediction { index, class: top[0].0, probability: top[0].1, top, started_at }
            })
            .collect())
    }

    /// [n, C, H, W] input: ((p * scale) - mean[c]) / std[c], grayscale copied to every channel
    /// when the card says `replicate_grayscale`.
    fn input_tensor(&self, images: &Images, start: usize, end: usize) -> Tensor {
        let [c, h, w] = self.card.input.shape;
        let norm = &self.card.input.normalization;
        let per_channel = |v: &Vec<f32>, ch: usize| if v.len() == 1 { v[0] } else { v[ch] };
        let mut data = Vec::with_capacity((end - start) * c * h * w);
        for i in start..end {
            let image = images.image(i);
            for ch in 0..c {
                let (mean, std) = (per_channel(&norm.mean, ch), per_channel(&norm.std, ch));
                data.extend(image.iter().map(|&p| (p * norm.scale - mean) / std));
            }
        }
        Tensor::from_shape(&[end - start, c, h, w], &data).expect("length matches by construction")
    }
}

/// ONNX bytes as a typed tract model (not yet optimised) with input [N, C, H, W] and a symbolic
/// batch `N`: the one ONNX loader (serving, the trainer's export checks, the NNEF conversion).
pub fn onnx_graph(bytes: &[u8], [c, h, w]: [usize; 3]) -> TractResult<TypedModel> {
    let model = tract_onnx::onnx().model_for_read(&mut std::io::Cursor::new(bytes))?;
    let n = model.sym("N");
    model
        .with_input_fact(0, f32::fact(tract_onnx::tract_core::dims!(n, c, h, w)).into())?
        // Forget any fixed batch size the exporter wrote on the output.
        .with_output_fact(0, InferenceFact::default())?
        .into_typed()
}

/// A tract-nnef `.nnef.tgz` as a typed tract model (not yet optimised).
pub fn nnef_graph(bytes: &[u8]) -> TractResult<TypedModel> {
    use tract_onnx::WithOnnx;
    tract_nnef::nnef().with_onnx().model_for_read(&mut std::io::Cursor::new(bytes))
}

/// Input must be [N, C, H, W] as the card says; output [N, classes] (trailing 1s allowed).
fn check_facts(model: &TypedModel, card: &ModelCard) -> Result<(), String> {
    if model.inputs.len() != 1 || model.outputs.is_empty() {
        return Err(format!("expected one input and an output, graph has {} and {}", model.inputs.len(), model.outputs.len()));
    }
    let input = model.input_fact(0).map_err(|e| e.to_string())?;
    let dims: Vec<String> = input.shape.iter().map(|d| d.to_string()).collect();
    let [c, h, w] = card.input.shape;
    let want = [c.to_string(), h.to_string(), w.to_string()];
    if dims.len() != 4 || dims[1..] != want || dims[0].parse::<usize>().is_ok() {
        return Err(format!("graph input is {dims:?}, card says [N, {c}, {h}, {w}] with a symbolic batch"));
    }
    let output = model.output_fact(0).map_err(|e| e.to_string())?;
    let width: Option<usize> = output.shape.iter().skip(1).map(|d| d.to_usize().ok()).product();
    if output.rank() < 2 || width != Some(card.classes.len()) {
        return Err(format!("graph output is {:?}, card lists {} classes", output.shape, card.classes.len()));
    }
    Ok(())
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The `k` highest entries, highest first; ties keep the lower index first.
pub fn top_k_of(probs: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut order: Vec<(usize, f32)> = probs.iter().copied().enumerate().collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    order.truncate(k);
    order
}
