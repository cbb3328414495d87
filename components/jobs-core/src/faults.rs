//! How store faults and a full queue answer over HTTP. Pure, so native tests pin what the `jobs`
//! component sends; the component only copies status, body and `Retry-After` into a response.

use serde_json::{Value, json};

use crate::kv::is_store_full;

/// An error answer: status, JSON body (always with `error` and `kind`), `Retry-After` seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorReply {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<u64>,
}

/// After a store error: a lock held by another writer or a slow disk usually clears in seconds.
pub const STORE_RETRY_SECONDS: u64 = 5;
/// After a full store: space has to be freed (retention, an operator), so not soon.
pub const FULL_RETRY_SECONDS: u64 = 60;
/// After a full queue: a few cron periods let queued work drain.
pub const QUEUE_RETRY_SECONDS: u64 = 30;

/// A key-value error: 507 when the store is out of space, else 503 (retryable). The details stay
/// in the log (the caller logs `e`), not in the answer.
pub fn store_fault(e: &anyhow::Error) -> ErrorReply {
    if is_store_full(e) {
        ErrorReply {
            status: 507,
            body: json!({ "error": "the job store is full; nothing was stored", "kind": "store_full" }),
            retry_after: Some(FULL_RETRY_SECONDS),
        }
    } else {
        ErrorReply {
            status: 503,
            body: json!({ "error": "the job store is unavailable; retry later", "kind": "store_unavailable" }),
            retry_after: Some(STORE_RETRY_SECONDS),
        }
    }
}

/// 429 for a submission refused because the store already holds as much unfinished work as allowed.
pub fn queue_full(queued: crate::jobs::Queued, max_jobs: usize, max_bytes: usize) -> ErrorReply {
    ErrorReply {
        status: 429,
        body: json!({
            "error": format!(
                "too much queued work: {} unfinished jobs with {} bytes of uploads (limits {max_jobs} jobs, {max_bytes} bytes); nothing was stored",
                queued.jobs, queued.bytes
            ),
            "kind": "queue_full",
            "queued_jobs": queued.jobs,
            "queued_bytes": queued.bytes,
        }),
        retry_after: Some(QUEUE_RETRY_SECONDS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::StoreFull;

    #[test]
    fn a_full_store_is_507_and_other_store_errors_503_both_with_retry_after() {
        let full = anyhow::Error::new(StoreFull("database or disk is full".into())).context("writing jobs/job/x");
        let reply = store_fault(&full);
        assert_eq!((reply.status, reply.body["kind"].as_str(), reply.retry_after), (507, Some("store_full"), Some(FULL_RETRY_SECONDS)));
        let busy = anyhow::anyhow!("database is locked");
        let reply = store_fault(&busy);
        assert_eq!((reply.status, reply.body["kind"].as_str(), reply.retry_after), (503, Some("store_unavailable"), Some(STORE_RETRY_SECONDS)));
        assert!(!reply.body["error"].as_str().unwrap().contains("locked"), "details stay in the log");
    }
}
