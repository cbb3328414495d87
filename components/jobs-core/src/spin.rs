//! What the `jobs` and `batch-cron` components share on top of the pure logic: [`Setup`] (config
//! from Spin variables, the store, [`Jobs`] and the predictor), the key-value adapter (spin-sdk's
//! `Store`, and `wasi:keyvalue` atomics for compare-and-swap),
//! the clock, the upload check the API runs before storing, the predictor that runs a stored
//! upload through kana-inference's decoding, model and `predict_response` (what `/predict` uses),
//! and [`spawn_run`], the async job's run after the response.

use std::ops::Range;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kana_inference::api::Timing;
use kana_inference::{Images, InputError, Limits, Model, PredictOptions, Registry, decode_input, predict_images, predict_response};
use serde_json::json;
use spin_sdk::experimental::wasi::keyvalue::{atomics, store as wasi_store};
use spin_sdk::key_value::{Error, Store};

use crate::api::{self, UploadCheck};
use crate::config::{self, Config};
use crate::faults::ErrorReply;
use crate::job::{self, Job};
use crate::jobs::{Jobs, Predictor, Trigger};
use crate::kv::{Clock, KeyValue, StoreFull};

/// Everything a component needs for one request or tick: the config and the open store.
pub struct Setup {
    pub config: Config,
    pub kv: SpinKv,
}

/// Why [`Setup::open`] failed: the variables (an operator's mistake, 500) or the store (503/507).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("bad configuration: {0:#}")]
    Config(anyhow::Error),
    #[error("opening the key-value store: {0:#}")]
    Store(anyhow::Error),
}

impl SetupError {
    /// The answer to `req` when the jobs API cannot even start.
    pub fn reply(&self, req: &api::Request<'_>) -> api::Reply {
        match self {
            SetupError::Config(e) => api::bad_config(e),
            SetupError::Store(e) => api::store_failed(req, e),
        }
    }
}

impl Setup {
    /// Reads the config and opens the `default` store.
    pub async fn open() -> Result<Self, SetupError> {
        Self::with_config(load_config().await.map_err(SetupError::Config)?).await
    }

    pub async fn with_config(config: Config) -> Result<Self, SetupError> {
        Ok(Self { kv: SpinKv::open_default().await.map_err(SetupError::Store)?, config })
    }

    pub fn jobs(&self) -> Jobs<'_, SpinKv, SpinClock> {
        Jobs { kv: &self.kv, clock: &SpinClock, config: &self.config }
    }

    /// The models of this instance's [`registry`], within the config's limits.
    pub fn predictor(&self) -> InferencePredictor<'static> {
        InferencePredictor { registry: registry(), limits: limits(&self.config) }
    }
}

/// Runs of spawned jobs going on in this instance. They share its one thread with its requests,
/// so running several at once only makes every request wait longer (25 at once delayed
/// submissions by up to a minute): one runs, the others wait their turn.
static SPAWNED_RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Runs async job `task_id` for one turn after the response has gone out (the `jobs` component
/// calls it for [`api::Reply::run_after`]). A run that cannot start within `run_budget`, or an
/// instance that dies first, leaves the job to cron.
pub fn spawn_run(task_id: String, config: Config) {
    spin_sdk::wasip3::spawn(async move {
        let give_up_at = Utc::now() + config.run_budget;
        // Single-threaded: nothing runs between this check and the increment.
        while SPAWNED_RUNNING.load(Ordering::Relaxed) > 0 {
            if Utc::now() >= give_up_at {
                return;
            }
            spin_sdk::time::sleep(Duration::from_millis(50)).await;
        }
        SPAWNED_RUNNING.fetch_add(1, Ordering::Relaxed);
        let run = async {
            let setup = Setup::with_config(config).await?;
            let owner = job::new_owner_id();
            anyhow::Ok(setup.jobs().run(&task_id, &owner, Trigger::Submitted, &setup.predictor()).await?)
        };
        let outcome = run.await;
        SPAWNED_RUNNING.fetch_sub(1, Ordering::Relaxed);
        if let Err(e) = outcome {
            kana_inference::log_line(&format!("async job {task_id} failed to run: {e:#}"));
        }
    });
}

/// The served models check uploads as the run will decode them: unknown model 404, bad input
/// 413/415/422 with `/predict`'s error bodies.
impl UploadCheck for Registry {
    fn check(&self, model: &str, content_type: Option<&str>, body: &[u8], config: &Config) -> Result<(), ErrorReply> {
        self.decode(model, content_type, body, config).map(drop)
    }

    fn decode(&self, model: &str, content_type: Option<&str>, body: &[u8], config: &Config) -> Result<Images, ErrorReply> {
        let refuse = |e: InputError| ErrorReply {
            status: e.status(),
            body: serde_json::to_value(e.body()).unwrap_or_else(|_| json!({ "error": e.to_string() })),
            retry_after: None,
        };
        let served = self.get(model).ok_or_else(|| refuse(InputError::UnknownModel(model.to_owned())))?;
        let options = PredictOptions { limits: limits(config), ..PredictOptions::default() };
        decode_input(served, content_type, body, &options).map_err(|e| ErrorReply {
            status: e.status(),
            body: serde_json::to_value(e.body()).unwrap_or_else(|_| json!({ "error": e.to_string() })),
            retry_after: None,
        })
    }
}

/// Where spin.toml mounts the models directory.
pub const MODELS_DIR: &str = "/models";

/// The `default` store, opened through both interfaces Spin gives components: `spin:key-value`
/// for plain reads and writes, `wasi:keyvalue` for compare-and-swap (Spin's has none).
pub struct SpinKv {
    store: Store,
    bucket: wasi_store::Bucket,
}

impl SpinKv {
    pub async fn open_default() -> anyhow::Result<Self> {
        let store = Store::open_default().await.map_err(store_error)?;
        let bucket = wasi_store::open("default").map_err(wasi_error)?;
        Ok(Self { store, bucket })
    }
}

fn wasi_error(e: wasi_store::Error) -> anyhow::Error {
    anyhow::anyhow!("key-value store: {e:?}")
}

/// Keeps spin's error in the chain, but as [`StoreFull`] when the store is out of space: kana-host
/// answers `store-table-full` when SQLite's disk or database is full.
fn store_error(e: Error) -> anyhow::Error {
    match e {
        Error::StoreTableFull => StoreFull("store-table-full".into()).into(),
        other => other.into(),
    }
}

impl KeyValue for SpinKv {
    async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        self.store.get(key).await.map_err(store_error)
    }
    async fn set(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        self.store.set(key, value).await.map_err(store_error)
    }
    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.store.delete(key).await.map_err(store_error)
    }
    async fn get_keys(&self) -> anyhow::Result<Vec<String>> {
        self.store.get_keys().await.collect().await.map_err(store_error)
    }
    async fn compare_and_swap(&self, key: &str, current: Option<&[u8]>, new: &[u8]) -> anyhow::Result<bool> {
        // A `cas` remembers the value it read; `swap` writes only if that is still the value.
        let cas = atomics::Cas::new(&self.bucket, key).map_err(wasi_error)?;
        if cas.current().map_err(wasi_error)?.as_deref() != current {
            return Ok(false);
        }
        match atomics::swap(cas, new) {
            Ok(()) => Ok(true),
            Err(atomics::CasError::CasFailed(_)) => Ok(false),
            Err(atomics::CasError::StoreError(e)) => Err(wasi_error(e)),
        }
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

/// Reads the optional variables of [`config::VARIABLES`] once per instance (Spin variables do
/// not change while an application runs); unset ones keep their defaults.
pub async fn load_config() -> anyhow::Result<Config> {
    static LOADED: OnceLock<Config> = OnceLock::new();
    if let Some(config) = LOADED.get() {
        return Ok(config.clone());
    }
    let config = read_config().await?;
    Ok(LOADED.get_or_init(|| config).clone())
}

async fn read_config() -> anyhow::Result<Config> {
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
        let (registry, errors) = Registry::open_dir(std::path::Path::new(MODELS_DIR));
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

/// Runs stored uploads through `/predict`'s own steps (`decode_input`, `predict_images`,
/// `predict_response`), a slice at a time; the job's id becomes the response's task id.
///
/// Slices run in steps of [`IMAGES_PER_STEP`] images with a short sleep before each: the sleep
/// returns control to the host, so an instance running a long job still answers other requests
/// (and sends the 202 of the request that spawned the job) between steps.
pub struct InferencePredictor<'a> {
    pub registry: &'a Registry,
    pub limits: Limits,
}

impl InferencePredictor<'_> {
    fn options(&self) -> PredictOptions {
        PredictOptions { limits: self.limits, ..PredictOptions::default() }
    }
}

/// A decoded upload and the model that runs it.
pub struct Decoded<'a> {
    model: &'a Model,
    images: Images,
}

impl<'a> Predictor for InferencePredictor<'a> {
    type Images = Decoded<'a>;

    async fn decode(&self, job: &Job, input: Vec<u8>) -> Result<Decoded<'a>, String> {
        let model = self.registry.get(&job.model).ok_or_else(|| format!("model '{}' is no longer served", job.model))?;
        // Stored as "" when the upload had no Content-Type: decode it exactly as it was validated.
        let content_type = Some(job.content_type.as_str()).filter(|ct| !ct.is_empty());
        let images = decode_input(model, content_type, &input, &self.options()).map_err(|e| e.to_string())?;
        Ok(Decoded { model, images })
    }

    fn count(&self, decoded: &Decoded<'a>) -> usize {
        decoded.images.count
    }

    async fn predict(&self, job: &Job, decoded: &Decoded<'a>, range: Range<usize>) -> Result<Vec<serde_json::Value>, String> {
        let model = decoded.model;
        let options = self.options();
        let mut predictions = Vec::with_capacity(range.len());
        let mut start = range.start;
        while start < range.end {
            // Yield first, so the spawning request's response goes out before any inference.
            spin_sdk::time::sleep(Duration::from_millis(1)).await;
            let end = (start + IMAGES_PER_STEP).min(range.end);
            predictions.extend(predict_images(model, &decoded.images, start..end, &options).map_err(|e| e.to_string())?);
            start = end;
        }
        // Only the result objects are kept; timings of one slice mean nothing for the job.
        let timing = Timing { decode: 0.0, inference: 0.0, total: 0.0 };
        let response = predict_response(&model.card, job.task_id.clone(), &predictions, false, timing);
        response.results.iter().map(|r| serde_json::to_value(r).map_err(|e| e.to_string())).collect()
    }
}
