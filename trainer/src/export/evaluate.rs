//! Re-measures an exported model: loads its card through `kana-inference` (sha256, graph checks,
//! the NNEF file when the card names one, the card's normalisation) and scores a dataset split.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use kana_inference::card::ModelCard;
use kana_inference::{Images, Model};
use ndarray::{Axis, s};

use crate::data::{Dataset, Source, Split};
use crate::metrics::{ConfusionMatrix, Report, argmax};

/// Images per call into the model (the model still runs its own chunks).
const EVAL_BATCH: usize = 1024;

pub struct Evaluation {
    pub card: ModelCard,
    pub dataset: Dataset,
    pub split: Split,
    pub confusion: ConfusionMatrix,
    pub report: Report,
}

pub fn load_model(card_path: &Path) -> Result<Model> {
    let card = super::read_card(card_path)?;
    let dir = card_path.parent().unwrap_or(Path::new("."));
    let mut model = Model::load(card, dir).map_err(|e| anyhow::anyhow!("{}: {e}", card_path.display()))?;
    // Native evaluation: bigger tract batches are faster here than the server's wasm default.
    model.chunk_size = 256;
    Ok(model)
}

/// Scores the model of `card_path` on `split` of `source` (the first `limit` images if given).
pub fn evaluate(card_path: &Path, source: &Source, split: Split, limit: Option<usize>) -> Result<Evaluation> {
    let model = load_model(card_path)?;
    let mut dataset = source.load(split)?;
    if let Some(n) = limit {
        dataset = dataset.take(n);
    }
    let confusion = score(&model, &dataset)?;
    let report = confusion.report();
    Ok(Evaluation { card: model.card.clone(), dataset, split, confusion, report })
}

/// The confusion matrix of `model` on every image of `dataset`.
pub fn score(model: &Model, dataset: &Dataset) -> Result<ConfusionMatrix> {
    ensure!(
        model.card.classes.len() == dataset.num_classes(),
        "model '{}' has {} classes, dataset {} has {}",
        model.card.name,
        model.card.classes.len(),
        dataset.name,
        dataset.num_classes()
    );
    let [h, w] = dataset.image_size();
    let mut confusion = ConfusionMatrix::new(dataset.num_classes());
    for start in (0..dataset.len()).step_by(EVAL_BATCH) {
        let end = (start + EVAL_BATCH).min(dataset.len());
        let chunk = dataset.images.slice(s![start..end, .., ..]);
        let pixels: Vec<u8> = chunk.iter().copied().collect();
        let images = Images::from_u8(end - start, h, w, &pixels);
        let rows = model.probabilities(&images).map_err(|e| anyhow::anyhow!("{e:?}")).context("running the model")?;
        let predicted: Vec<u32> = rows.iter().map(|(p, _)| argmax(p) as u32).collect();
        let truth: Vec<u32> = dataset.labels[start..end].iter().map(|&l| l as u32).collect();
        confusion.add(&truth, &predicted);
    }
    debug_assert_eq!(confusion.counts.sum_axis(Axis(1)).sum() as usize, dataset.len());
    Ok(confusion)
}

/// Evaluates and writes the metrics into the card (the numbers a card carries are always measured
/// on the exported file).
pub fn measure_and_record(card_path: &Path, source: &Source, split: Split) -> Result<Evaluation> {
    let mut eval = evaluate(card_path, source, split, None)?;
    eval.card.metrics = Some(eval.report.card_metrics(&eval.dataset.name, split.as_str()));
    super::write_card(card_path, &eval.card)?;
    Ok(eval)
}
