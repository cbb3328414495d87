//! The job record stored per task, task ids, and the key layout of everything in the store.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Running,
    Done,
    Failed,
}

impl Status {
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Done | Status::Failed)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `/async_predict`: run right after the response; cron runs it if still pending after a lease.
    Async,
    /// `/schedule`: cron runs it once `execute_at` has passed.
    Scheduled,
}

/// Who is running a job and until when that protects it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub task_id: String,
    pub model: String,
    pub kind: Kind,
    pub status: Status,
    pub created_at: DateTime<Utc>,
    pub execute_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The upload's Content-Type, so the stored body decodes exactly like the original request.
    pub content_type: String,
    pub input_bytes: usize,
    pub input_chunks: u32,
    pub result_chunks: u32,
    /// Length of the results value (a JSON array, grown slice by slice); bytes past it in the
    /// last chunk are left over from a turn that stopped before saving. None in records written
    /// before results were appended in slices: the chunks hold exactly the array.
    #[serde(default)]
    pub result_bytes: Option<usize>,
    /// Images in the upload, known once a run has decoded it (0 before).
    #[serde(default)]
    pub images: usize,
    /// Images whose results are stored: a later turn resumes from here.
    #[serde(default)]
    pub images_done: usize,
    pub error: Option<String>,
    /// Runs started (each also leaves a `run/{owner}` key): 1 for a normal job, one more for each
    /// interrupted run taken over. A turn that continues a cleanly paused run is not a new run.
    pub runs: u32,
    /// Turns runners took on the job: more than `runs` when it was too big for one `run_budget`.
    #[serde(default)]
    pub turns: u32,
    /// Owners of the runs started, so deleting the job also deletes their `run/{owner}` keys.
    #[serde(default)]
    pub run_owners: Vec<String>,
    /// While `running`: Some while a runner holds it (or died holding it), None when the last
    /// turn paused at its budget and handed the rest to the next tick.
    pub lease: Option<Lease>,
}

impl Job {
    /// When cron should pick the job up: its time for scheduled jobs, one lease after creation
    /// for async ones (by then the run started after the response should be long finished).
    pub fn due_at(&self, lease: chrono::Duration) -> DateTime<Utc> {
        match self.kind {
            Kind::Scheduled => self.execute_at,
            Kind::Async => self.created_at + lease,
        }
    }

    /// The public `GET /tasks/{id}` view, without results.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "task_id": self.task_id,
            "model": self.model,
            "kind": self.kind,
            "status": self.status,
            "created_at": timestamp_ms(self.created_at),
            "execute_at": timestamp(self.execute_at),
            "started_at": self.started_at.map(timestamp_ms),
            "finished_at": self.finished_at.map(timestamp_ms),
            "runs": self.runs,
            "turns": self.turns,
            "images": self.images,
            "images_done": self.images_done,
            "error": self.error,
        })
    }
}

/// RFC 3339 in UTC with a `Z`, the form used in every response.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// As [`timestamp`] with milliseconds, for times the server measures (not ones a client gave).
pub fn timestamp_ms(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Task ids are kana-inference's one scheme (`/predict` hands out the same shape): a timestamp
/// prefix and 25 random base-36 characters; the id is the capability to read a job.
pub use kana_inference::task_id::{created_at as created_at_of, is_valid as is_valid_task_id, new as new_task_id};

/// A random owner id for one component instance / run.
pub fn new_owner_id() -> String {
    kana_inference::task_id::random_token(16)
}

/// Key layout. Everything lives under `jobs/` so other components can share the store.
pub mod keys {
    pub const JOB_PREFIX: &str = "jobs/job/";

    pub fn meta(id: &str) -> String {
        format!("jobs/job/{id}")
    }
    pub fn input(id: &str) -> String {
        format!("jobs/job/{id}/input")
    }
    pub fn result(id: &str) -> String {
        format!("jobs/job/{id}/result")
    }
    pub fn claim(id: &str) -> String {
        format!("jobs/job/{id}/claim")
    }
    /// One key per started run: lets tests (and operators) count runs without trusting a counter.
    pub fn run_marker(id: &str, owner: &str) -> String {
        format!("jobs/job/{id}/run/{owner}")
    }
    /// Present while a job is unfinished; its upload size is in the key so one key listing
    /// answers "how much work is queued" without reading every record.
    pub fn queued(id: &str, input_bytes: usize) -> String {
        format!("jobs/job/{id}/queued/{input_bytes}")
    }
    /// The id and upload size if `key` is a [`queued`] marker.
    pub fn queued_key(key: &str) -> Option<(&str, usize)> {
        let (id, bytes) = key.strip_prefix(JOB_PREFIX)?.split_once("/queued/")?;
        Some((id, bytes.parse().ok()?))
    }
    pub fn bucket(index: &str, minute: i64) -> String {
        format!("jobs/index/{index}/{minute}")
    }
    pub const LAST_SWEEP: &str = "jobs/index/last_sweep";

    /// The index name and minute if `key` is a [`bucket`].
    pub fn bucket_key(key: &str) -> Option<(&str, i64)> {
        let (index, minute) = key.strip_prefix("jobs/index/")?.split_once('/')?;
        Some((index, minute.parse().ok()?))
    }

    /// The id if `key` is a job's meta key (not one of its sub-keys).
    pub fn meta_key_id(key: &str) -> Option<&str> {
        key.strip_prefix(JOB_PREFIX).filter(|rest| !rest.contains('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_keys_are_told_apart_from_sub_keys() {
        assert_eq!(keys::meta_key_id(&keys::meta("x")), Some("x"));
        assert_eq!(keys::meta_key_id(&keys::claim("x")), None);
        assert_eq!(keys::meta_key_id(&format!("{}/0", keys::input("x"))), None);
        assert_eq!(keys::meta_key_id(&keys::queued("x", 12)), None);
        assert_eq!(keys::queued_key(&keys::queued("x", 12)), Some(("x", 12)));
        assert_eq!(keys::queued_key(&keys::claim("x")), None);
        assert_eq!(keys::bucket_key(&keys::bucket("due", 42)), Some(("due", 42)));
        assert_eq!(keys::bucket_key(keys::LAST_SWEEP), None);
        assert_eq!(Status::parse("done"), Some(Status::Done));
        assert_eq!(Status::parse("nope"), None);
    }
}
