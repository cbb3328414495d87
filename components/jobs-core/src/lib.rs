//! kana-jobs: async predictions and scheduled batches stored in a Spin key-value store.
//!
//! Pure logic over the small [`kv::KeyValue`] trait, so it is unit-tested natively with an
//! in-memory store (racing claimers included) and used by the `jobs` and `batch-cron` components
//! through an adapter over spin-sdk's `Store`. [`api`] is the `jobs` component's HTTP mapping,
//! [`tick`] the cron loop of `batch-cron`, `spin` (feature `spin`) what both components share.
//!
//! Key layout (all under `jobs/`): `job/{id}` record, `job/{id}/input/{n}` and
//! `job/{id}/result/{n}` chunks, `job/{id}/claim`, `job/{id}/run/{owner}` (one per started run),
//! `job/{id}/queued/{bytes}` (while unfinished),
//! `index/{due|expire}/{minute}` buckets, `index/last_sweep`.

pub mod api;
pub mod chunks;
pub mod claim;
pub mod config;
pub mod faults;
pub mod index;
pub mod job;
pub mod jobs;
pub mod kv;
pub mod schedule;
#[cfg(test)]
mod testing;
pub mod tick;
#[cfg(feature = "spin")]
pub mod spin;

pub use config::Config;
pub use job::{Job, Kind, Status};
pub use jobs::{Jobs, NewJob, Page, Predictor, Queued, RunOutcome, SubmitError, Trigger};
pub use tick::TickReport;

/// The components' log line (one write per line), so they need no direct kana-inference dependency.
pub use kana_inference::log_line;
