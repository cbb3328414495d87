//! The JSON of the prediction API and the one function that turns request bytes into it, shared by
//! `/predict` (synchronous), `/async_predict` and scheduled batches so their results are identical.
//!
//! Shape kept from the reference server: `{"model", "task_id", "results": [{"index",
//! "start_timestamp", "prediction", "prediction_label", "probability"}]}` with its value types
//! (label and probability are strings). Added: `model_version`, `count`, `timing_ms`, and per
//! result `top_k` when `?top_k=N` is asked.

use std::ops::Range;
use std::time::Instant;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::card::ModelCard;
use crate::decode::{Images, Limits, decode_upload};
use crate::error::{InputError, PredictError};
use crate::model::{Model, Prediction, WeightsFormat};
use crate::sheet::{self, Sheet};
use crate::task_id;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PredictResponse {
    pub model: String,
    pub task_id: String,
    pub results: Vec<PredictionResult>,
    pub model_version: String,
    pub count: usize,
    pub timing_ms: Timing,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PredictionResult {
    pub index: usize,
    /// "YYYYMMDD_hhmmss" (UTC) when this image's chunk started running.
    pub start_timestamp: String,
    /// What a person reads, e.g. "と".
    pub prediction: String,
    /// Class index as a string, e.g. "19" (as the reference).
    pub prediction_label: String,
    /// f32 probability as a string, e.g. "0.31642184" (as the reference).
    pub probability: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<Vec<Alternative>>,
}

/// One of the `top_k` best classes; same field types as the main result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alternative {
    pub prediction: String,
    pub prediction_label: String,
    pub probability: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub decode: f64,
    pub inference: f64,
    pub total: f64,
}

/// What a request asks beyond its body.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PredictOptions {
    pub top_k: Option<usize>,
    pub limits: Limits,
    pub task_id: Option<String>,
    /// Images per tract run; None → the model's default.
    pub chunk_size: Option<usize>,
}

/// The Spin variables `/predict` reads (spin.toml `[component.predict.variables]`).
pub const PREDICT_VARIABLES: [&str; 3] = ["max_images", "max_upload_bytes", "chunk_size"];

impl PredictOptions {
    /// The request-independent options from Spin variables (`lookup` answers None when one is
    /// unset). A value that is not a positive integer keeps its default and comes back in the
    /// messages, for the log: a typo in spin.toml must not take every request down.
    pub fn from_variables(lookup: impl Fn(&str) -> Option<String>) -> (PredictOptions, Vec<String>) {
        let mut options = PredictOptions::default();
        let mut problems = Vec::new();
        let mut read = |name: &str, default: Option<usize>| -> Option<usize> {
            let raw = lookup(name)?;
            match raw.trim().parse::<usize>() {
                Ok(n) if n > 0 => Some(n),
                _ if raw.trim().is_empty() => default,
                _ => {
                    let fallback = default.map_or("the model's default".to_string(), |d| d.to_string());
                    problems.push(format!("variable {name}={raw:?} is not a positive integer; using {fallback}"));
                    default
                }
            }
        };
        let limits = options.limits;
        options.limits.max_images = read("max_images", Some(limits.max_images)).unwrap_or(limits.max_images);
        options.limits.max_body_bytes = read("max_upload_bytes", Some(limits.max_body_bytes)).unwrap_or(limits.max_body_bytes);
        // Empty means "the model's default" (spin.toml's default value).
        options.chunk_size = read("chunk_size", None);
        (options, problems)
    }
}

/// Request body (with its Content-Type) → the `/predict` response for `model`: the one
/// prediction path, [`decode_input`] → [`predict_images`] → [`predict_response`]. Job runners
/// take the same steps, a slice of images at a time. `options.task_id` keeps an id handed out
/// earlier.
pub fn predict_request(
    model: &Model,
    content_type: Option<&str>,
    body: &[u8],
    options: &PredictOptions,
) -> Result<PredictResponse, PredictError> {
    let started = Instant::now();
    let now = Utc::now();
    let images = decode_input(model, content_type, body, options)?;
    let decoded = Instant::now();
    let predictions = predict_images(model, &images, 0..images.count, options)?;
    let inferred = Instant::now();
    let task_id = options.task_id.clone().unwrap_or_else(|| task_id::new(now));
    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
    Ok(predict_response(&model.card, task_id, &predictions, options.top_k.is_some(), Timing {
        decode: ms(started, decoded),
        inference: ms(decoded, inferred),
        total: ms(started, inferred),
    }))
}

/// What `POST /predict/{model}` answers: the JSON, or with `?format=png` the contact sheet.
#[derive(Clone, Debug, PartialEq)]
pub enum PredictAnswer {
    Json(PredictResponse),
    Png(Sheet),
}

/// `POST /predict/{model}` once the model is found: `top_k` and `format` from the query, then
/// [`predict_request`] or [`predict_sheet`].
pub fn answer_predict(model: &Model, content_type: Option<&str>, body: &[u8], query: Option<&str>, options: PredictOptions) -> Result<PredictAnswer, PredictError> {
    let options = PredictOptions { top_k: parse_top_k(query)?, ..options };
    Ok(match parse_format(query)? {
        ResponseFormat::Json => PredictAnswer::Json(predict_request(model, content_type, body, &options)?),
        ResponseFormat::Png => PredictAnswer::Png(predict_sheet(model, content_type, body, &options)?),
    })
}

/// Checks the request's options against `model` and decodes the upload into its input size.
pub fn decode_input(model: &Model, content_type: Option<&str>, body: &[u8], options: &PredictOptions) -> Result<Images, PredictError> {
    if let Some(k) = options.top_k {
        check_top_k(k, model.card.classes.len())?;
    }
    let [_, h, w] = model.card.input.shape;
    Ok(decode_upload(content_type, body, h, w, &options.limits)?)
}

/// Runs images `range` in chunks; results are indexed in the whole upload, not the range.
pub fn predict_images(model: &Model, images: &Images, range: Range<usize>, options: &PredictOptions) -> Result<Vec<Prediction>, PredictError> {
    let chunk = options.chunk_size.unwrap_or(model.chunk_size);
    let top_k = options.top_k.unwrap_or(1);
    if range == (0..images.count) {
        return model.predict_chunked(images, top_k, chunk);
    }
    let offset = range.start;
    let predictions = model.predict_chunked(&images.slice(range.start, range.end), top_k, chunk)?;
    Ok(predictions.into_iter().map(|p| Prediction { index: p.index + offset, ..p }).collect())
}

/// Builds the response body from predictions (the single place that formats results).
pub fn predict_response(
    card: &ModelCard,
    task_id: String,
    predictions: &[Prediction],
    with_top_k: bool,
    timing_ms: Timing,
) -> PredictResponse {
    let label = |class: usize| card.classes.get(class).map(|c| c.label.clone()).unwrap_or_default();
    let results = predictions
        .iter()
        .map(|p| PredictionResult {
            index: p.index,
            start_timestamp: p.started_at.format("%Y%m%d_%H%M%S").to_string(),
            prediction: label(p.class),
            prediction_label: p.class.to_string(),
            probability: p.probability.to_string(),
            top_k: with_top_k.then(|| {
                p.top
                    .iter()
                    .map(|&(class, prob)| Alternative {
                        prediction: label(class),
                        prediction_label: class.to_string(),
                        probability: prob.to_string(),
                    })
                    .collect()
            }),
        })
        .collect::<Vec<_>>();
    PredictResponse {
        model: card.name.clone(),
        task_id,
        count: results.len(),
        results,
        model_version: card.version.clone(),
        timing_ms,
    }
}

/// Reads `top_k` from a query string ("top_k=3&x=y"); absent → None.
pub fn parse_top_k(query: Option<&str>) -> Result<Option<usize>, InputError> {
    query_param(query, "top_k")
        .map(|value| value.parse::<usize>().map_err(|_| InputError::BadQuery(format!("top_k='{value}' is not a positive integer"))))
        .transpose()
}

/// What `POST /predict/{model}` answers with (`?format=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResponseFormat {
    /// [`PredictResponse`] (the default).
    #[default]
    Json,
    /// A contact sheet PNG ([`predict_sheet`]).
    Png,
}

/// Reads `format` from a query string: `json` (or absent) or `png`.
pub fn parse_format(query: Option<&str>) -> Result<ResponseFormat, InputError> {
    match query_param(query, "format") {
        None | Some("json") => Ok(ResponseFormat::Json),
        Some("png") => Ok(ResponseFormat::Png),
        Some(other) => Err(InputError::BadQuery(format!("format='{other}' is neither json nor png"))),
    }
}

/// The first value of `name` in a query string (not percent-decoded: the values read here are
/// plain ASCII).
fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').map(|pair| pair.split_once('=').unwrap_or((pair, ""))).find(|(key, _)| *key == name).map(|(_, v)| v)
}

/// `?format=png`: the contact sheet of the upload, decoded and predicted as [`predict_request`]
/// does, but only for the images the sheet draws (the first [`sheet::MAX_TILES`]), so a big
/// upload costs no more than a full sheet.
pub fn predict_sheet(model: &Model, content_type: Option<&str>, body: &[u8], options: &PredictOptions) -> Result<Sheet, PredictError> {
    let images = decode_input(model, content_type, body, options)?;
    let predictions = predict_images(model, &images, 0..images.count.min(sheet::MAX_TILES), options)?;
    // Only the result objects are drawn: no task id, no timings.
    let response = predict_response(&model.card, String::new(), &predictions, false, Timing { decode: 0.0, inference: 0.0, total: 0.0 });
    Ok(sheet::contact_sheet(&model.card.name, &images, &response.results))
}

fn check_top_k(k: usize, classes: usize) -> Result<(), InputError> {
    if k == 0 || k > classes {
        return Err(InputError::BadQuery(format!("top_k={k} is outside 1..={classes}")));
    }
    Ok(())
}

/// `GET /models` and `GET /models/{name}` entries: the card plus how it is served.
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo<'a> {
    #[serde(flatten)]
    pub card: &'a ModelCard,
    pub served_from: WeightsFormat,
    /// Models are planned on their first request in each instance: `null` until then.
    pub load_ms: Option<f64>,
    /// Set when planning failed (the weights do not match the card).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_error: Option<&'a str>,
}

impl<'a> From<&'a Model> for ModelInfo<'a> {
    fn from(m: &'a Model) -> Self {
        ModelInfo { card: &m.card, served_from: m.format, load_ms: m.load_ms(), load_error: m.load_error() }
    }
}
