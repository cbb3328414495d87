//! Test doubles shared by the tests of `jobs`, `tick` and `api`: a predictor that echoes its
//! input bytes, a store that fails chosen writes, a fixed clock and config.

use std::cell::Cell;
use std::ops::Range;

use chrono::{DateTime, Duration, Utc};
use futures::future::LocalBoxFuture;

use crate::config::Config;
use crate::job::{Job, Kind, keys};
use crate::jobs::{NewJob, Predictor};
use crate::kv::{KeyValue, ManualClock, MemoryKv};

pub(crate) type Hook<'a> = Box<dyn Fn(usize) -> LocalBoxFuture<'a, ()> + 'a>;

/// One "image" per input byte, whose result is `{model, index, byte}`; inputs starting with
/// "bad" do not decode. Predicting moves `clock` on by `ms_per_image` per image (work takes
/// time), and `before_slice` runs before each slice with its first index (a stall, a rival).
#[derive(Default)]
pub(crate) struct Echo<'a> {
    pub(crate) clock: Option<&'a ManualClock>,
    pub(crate) ms_per_image: i64,
    pub(crate) before_slice: Option<Hook<'a>>,
    /// Uploads decoded (one per turn).
    pub(crate) calls: Cell<usize>,
    /// Images predicted, over all turns.
    pub(crate) images: Cell<usize>,
}

impl<'a> Echo<'a> {
    pub(crate) fn slow(clock: &'a ManualClock, ms_per_image: i64) -> Self {
        Echo { clock: Some(clock), ms_per_image, ..Echo::default() }
    }
}

impl Predictor for Echo<'_> {
    type Images = Vec<u8>;
    async fn decode(&self, _job: &Job, input: Vec<u8>) -> Result<Vec<u8>, String> {
        self.calls.set(self.calls.get() + 1);
        if input.starts_with(b"bad") {
            return Err("cannot decode upload".into());
        }
        Ok(input)
    }
    fn count(&self, images: &Vec<u8>) -> usize {
        images.len()
    }
    async fn predict(&self, job: &Job, images: &Vec<u8>, range: Range<usize>) -> Result<Vec<serde_json::Value>, String> {
        if let Some(hook) = &self.before_slice {
            hook(range.start).await;
        }
        if let Some(clock) = self.clock {
            clock.advance(Duration::milliseconds(self.ms_per_image * range.len() as i64));
        }
        self.images.set(self.images.get() + range.len());
        Ok(range.map(|i| serde_json::json!({ "model": job.model, "index": i, "byte": images[i] })).collect())
    }
}

/// What Echo's results for `body` are.
pub(crate) fn echoed(body: &[u8]) -> serde_json::Value {
    body.iter().enumerate().map(|(i, b)| serde_json::json!({ "model": "cnn", "index": i, "byte": b })).collect()
}

pub(crate) fn clock() -> ManualClock {
    ManualClock::new(DateTime::parse_from_rfc3339("2024-03-22T15:00:00Z").unwrap().to_utc())
}

pub(crate) fn config() -> Config {
    Config { chunk_bytes: 4, ..Config::default() }
}

pub(crate) fn scheduled(at: DateTime<Utc>) -> NewJob<'static> {
    NewJob { model: "cnn", content_type: "application/x-npz", body: b"0123456789", kind: Kind::Scheduled, execute_at: Some(at) }
}

pub(crate) fn runs(kv: &MemoryKv, id: &str) -> usize {
    kv.keys_with_prefix(&format!("{}/run/", keys::meta(id))).len()
}

pub(crate) type Fault<'a> = Box<dyn Fn(&str) -> Option<anyhow::Error> + 'a>;

/// A store whose writes (`set`, `compare_and_swap`) fail for keys `fail` picks: a crash, a lock or a full disk at that write.
pub(crate) struct FaultyKv<'a> {
    pub(crate) kv: &'a MemoryKv,
    pub(crate) fail: Fault<'a>,
}

impl KeyValue for FaultyKv<'_> {
    async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        self.kv.get(key).await
    }
    async fn set(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        match (self.fail)(key) {
            Some(e) => Err(e),
            None => self.kv.set(key, value).await,
        }
    }
    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.kv.delete(key).await
    }
    async fn get_keys(&self) -> anyhow::Result<Vec<String>> {
        self.kv.get_keys().await
    }
    async fn compare_and_swap(&self, key: &str, current: Option<&[u8]>, new: &[u8]) -> anyhow::Result<bool> {
        match (self.fail)(key) {
            Some(e) => Err(e),
            None => self.kv.compare_and_swap(key, current, new).await,
        }
    }
}
