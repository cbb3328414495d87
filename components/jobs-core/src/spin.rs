//! What the `jobs` and `batch-cron` components share on top of the pure logic: the spin-sdk
//! key-value adapter, the clock, config from Spin variables, and the predictor that runs a stored
//! upload through kana-inference's decoding, model and `predict_response` (what `/predict` uses).

use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kana_inference::api::Timing;
use kana_inference::{Limits, Prediction, Registry, decode_upload, predict_response};
use spin_sdk::key_value::Store;

use crate::config::{self, Config};
use crate::job::Job;
use crate::jobs::Predictor;
use crate::kv::{Clock, KeyValue};

/// Where spin.toml mounts the models directory.
pub const MODELS_DIR: &str = "/models";

pub struct SpinKv(pub Store);

impl SpinKv {
    pub async fn open_default() -> anyhow::Result<Self> {
        Ok(Self(Store::open_default().await?))
    }
}

impl KeyValue for SpinKv {
    async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.0.get(key).await?)
    }
    async fn set(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        Ok(self.0.set(key, value).await?)
    }
    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        Ok(self.0.delete(key).await?)
    }
    async fn get_keys(&self) -> anyhow::Result<Vec<String>> {
        Ok(self.0.get_keys().await.collect().await?)
    }
}

pub struct SpinClock;

impl Clock for SpinClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    async fn sleep(&self, duration: Duration) {
        spin_sdk::time::sleep(duration).await
    }
}

/// Reads the optional variables of [`config::VARIABLES`]; unset ones keep their defaults.
pub async fn load_config() -> anyhow::Result<Config> {
    let mut values = Vec::new();
    for name in config::VARIABLES {
        if let Ok(value) = spin_sdk::variables::get(name).await {
            values.push((*name, value));
        }
    }
    Config::from_variables(|name| values.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()))
}

/// Models are loaded once per instance; the host reuses instances across requests and ticks.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let (registry, errors) = Registry::load_dir(std::path::Path::new(MODELS_DIR));
        for error in errors {
            kana_inference::log_line(&format!("model not served: {error}"));
        }
        registry
    })
}

pub fn limits(config: &Config) -> Limits {
    Limits { max_images: config.max_images, max_body_bytes: config.max_input_bytes }
}

/// Images run between two yields to the host (≈0.1–0.3 s of wasm work for a K49-size CNN).
pub const IMAGES_PER_STEP: usize = 256;

/// Runs stored uploads through the same decoding, model and response formatting as `/predict`;
/// the job's id becomes the response's task id.
///
/// Large batches run in steps of [`IMAGES_PER_STEP`] images with a short sleep between them: the
/// sleep returns control to the host, so an instance running a long job still answers other
/// requests (and sends the 202 of the request that spawned the job) between steps.
pub struct InferencePredictor<'a> {
    pub registry: &'a Registry,
    pub limits: Limits,
}

impl Predictor for InferencePredictor<'_> {
    async fn predict(&self, job: &Job, input: Vec<u8>) -> Result<serde_json::Value, String> {
        let model = self.registry.get(&job.model).ok_or_else(|| format!("model '{}' is no longer served", job.model))?;
        // Stored as "" when the upload had no Content-Type: decode it exactly as it was validated.
        let content_type = Some(job.content_type.as_str()).filter(|ct| !ct.is_empty());
        let started = std::time::Instant::now();
        let [_, height, width] = model.card.input.shape;
        let images = decode_upload(content_type, &input, height, width, &self.limits).map_err(|e| e.to_string())?;
        drop(input);
        let decoded = std::time::Instant::now();
        let mut predictions: Vec<Prediction> = Vec::with_capacity(images.count);
        let mut start = 0;
        while start < images.count {
            // Yield first, so the spawning request's response goes out before any inference.
            spin_sdk::time::sleep(Duration::from_millis(1)).await;
            let end = (start + IMAGES_PER_STEP).min(images.count);
            let step = model.predict_chunked(&images.slice(start, end), 1, model.chunk_size).map_err(|e| e.to_string())?;
            predictions.extend(step.into_iter().map(|p| Prediction { index: p.index + start, ..p }));
            start = end;
        }
        let inferred = std::time::Instant::now();
        let ms = |a: std::time::Instant, b: std::time::Instant| (b - a).as_secs_f64() * 1e3;
        let timing = Timing { decode: ms(started, decoded), inference: ms(decoded, inferred), total: ms(started, inferred) };
        let response = predict_response(&model.card, job.task_id.clone(), &predictions, false, timing);
        serde_json::to_value(response.results).map_err(|e| e.to_string())
    }
}
