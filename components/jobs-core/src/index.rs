//! The due-time index: one key per UTC minute (`jobs/index/{due|expire}/{minute}`) holding the
//! ids of jobs that become due (or expire) in that minute, so a tick reads a dozen bucket keys and
//! the jobs in them instead of every job.
//!
//! Appending is a compare-and-swap of the bucket, retried while other writers (other instances or
//! hosts) change it first, so racing appends lose no id. The periodic sweep (`Jobs::tick`) lists
//! every key and stays the backstop for a writer that gave up or crashed.
//! Writers never add to a bucket older than the current minute, and ticks delete only buckets at
//! least two minutes old, so deleting a finished bucket never races with an append.

use chrono::{DateTime, Utc};

use crate::job::keys;
use crate::kv::KeyValue;

#[derive(Clone, Copy, Debug)]
pub struct Index(pub &'static str);

pub const DUE: Index = Index("due");
pub const EXPIRE: Index = Index("expire");

pub fn minute(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(60)
}

async fn read_ids(kv: &impl KeyValue, key: &str) -> anyhow::Result<Vec<String>> {
    parse_ids(kv.get(key).await?.as_deref())
}

fn parse_ids(value: Option<&[u8]>) -> anyhow::Result<Vec<String>> {
    Ok(match value {
        Some(v) => serde_json::from_slice(v)?,
        None => Vec::new(),
    })
}

/// Swaps lost to other writers before [`Index::add`] gives up (the sweep then finds the job).
const ADD_ATTEMPTS: usize = 64;

impl Index {
    /// Adds `id` to the bucket of `at` (or of `now`, if `at` has passed). False if other writers
    /// won every swap; the sweep will still find the job.
    pub async fn add(&self, kv: &impl KeyValue, id: &str, at: DateTime<Utc>, now: DateTime<Utc>) -> anyhow::Result<bool> {
        let key = keys::bucket(self.0, minute(at).max(minute(now)));
        for _ in 0..ADD_ATTEMPTS {
            let current = kv.get(&key).await?;
            let mut ids = parse_ids(current.as_deref())?;
            if ids.iter().any(|i| i == id) {
                return Ok(true);
            }
            ids.push(id.to_owned());
            if kv.compare_and_swap(&key, current.as_deref(), &serde_json::to_vec(&ids)?).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The buckets from `window` minutes ago up to the current minute, oldest first, skipping empty ones.
    pub async fn recent(&self, kv: &impl KeyValue, now: DateTime<Utc>, window: i64) -> anyhow::Result<Vec<(i64, Vec<String>)>> {
        let current = minute(now);
        let mut buckets = Vec::new();
        for m in current - window..=current {
            let ids = read_ids(kv, &keys::bucket(self.0, m)).await?;
            if !ids.is_empty() {
                buckets.push((m, ids));
            }
        }
        Ok(buckets)
    }

    /// Deletes a bucket whose jobs are all settled, if no writer can still append to it.
    pub async fn retire(&self, kv: &impl KeyValue, bucket: i64, now: DateTime<Utc>) -> anyhow::Result<()> {
        if bucket < minute(now) - 1 {
            kv.delete(&keys::bucket(self.0, bucket)).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemoryKv;
    use futures::executor::block_on;

    #[test]
    fn ids_land_in_minute_buckets_and_past_times_use_now() {
        let kv = MemoryKv::new();
        let now = DateTime::parse_from_rfc3339("2024-03-22T15:00:30Z").unwrap().to_utc();
        block_on(async {
            assert!(DUE.add(&kv, "a", now + chrono::Duration::seconds(45), now).await.unwrap());
            assert!(DUE.add(&kv, "b", now - chrono::Duration::minutes(5), now).await.unwrap());
            assert!(DUE.add(&kv, "b", now, now).await.unwrap(), "idempotent");
            let later = now + chrono::Duration::minutes(1);
            let buckets = DUE.recent(&kv, later, 3).await.unwrap();
            assert_eq!(buckets, vec![(minute(now), vec!["b".to_string()]), (minute(later), vec!["a".to_string()])]);
            DUE.retire(&kv, minute(now), later).await.unwrap();
            assert_eq!(DUE.recent(&kv, later, 3).await.unwrap().len(), 2, "too recent to delete");
            DUE.retire(&kv, minute(now), later + chrono::Duration::minutes(1)).await.unwrap();
            assert_eq!(DUE.recent(&kv, later, 3).await.unwrap().len(), 1);
        });
    }

    #[test]
    fn racing_appends_to_one_bucket_lose_no_id() {
        let kv = MemoryKv::new();
        let now = DateTime::parse_from_rfc3339("2024-03-22T15:00:30Z").unwrap().to_utc();
        let ids: Vec<String> = (0..20).map(|i| format!("job{i}")).collect();
        block_on(async {
            let added = futures::future::join_all(ids.iter().map(|id| DUE.add(&kv, id, now, now))).await;
            assert!(added.into_iter().all(|a| a.unwrap()));
            let mut stored = DUE.recent(&kv, now, 0).await.unwrap().remove(0).1;
            stored.sort();
            let mut expected = ids.clone();
            expected.sort();
            assert_eq!(stored, expected);
        });
    }
}
