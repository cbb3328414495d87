//! Claims: who may run a job now. A claim is a key `{owner, expires_at}` that changes hands only
//! by compare-and-swap (`wasi:keyvalue` atomics in the components): a runner reads it, and if it
//! is absent, expired or already its own, swaps in its own record *from exactly the value it
//! read*. Of runners racing from the same read, one swap succeeds and the others see theirs
//! refused, so at most one runner holds a live claim, by construction and not by timing.
//!
//! The lease (`expires_at`) is for crashed runners: a claim nobody renews lapses and the next
//! runner takes it over. Runners work in slices and [`renew`] the claim between them (also a
//! swap from the value they hold); a runner whose claim expired or changed hands stops without
//! writing. [`release`] swaps in an expired record rather than deleting the key, because a plain
//! delete could remove a claim someone else took in between; the job's deletion removes the key.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::job::keys;
use crate::kv::{Clock, KeyValue};

#[derive(Debug, Serialize, Deserialize)]
struct ClaimRecord {
    owner: String,
    expires_at: DateTime<Utc>,
}

/// The claim's stored bytes (what a swap must start from) and its record. An unreadable claim
/// (e.g. a torn write) counts as free: the job record still guards runs.
async fn read(kv: &impl KeyValue, key: &str) -> anyhow::Result<(Option<Vec<u8>>, Option<ClaimRecord>)> {
    let bytes = kv.get(key).await?;
    let record = bytes.as_deref().and_then(|v| serde_json::from_slice(v).ok());
    Ok((bytes, record))
}

async fn swap(kv: &impl KeyValue, key: &str, current: Option<&[u8]>, owner: &str, expires_at: DateTime<Utc>) -> anyhow::Result<bool> {
    let record = ClaimRecord { owner: owner.to_owned(), expires_at };
    kv.compare_and_swap(key, current, &serde_json::to_vec(&record)?).await
}

/// True when `owner` holds the claim on job `id` for `lease` from now.
pub async fn acquire(kv: &impl KeyValue, clock: &impl Clock, id: &str, owner: &str, lease: Duration) -> anyhow::Result<bool> {
    let key = keys::claim(id);
    let now = clock.now();
    let (bytes, held) = read(kv, &key).await?;
    if held.is_some_and(|h| h.owner != owner && h.expires_at > now) {
        return Ok(false);
    }
    swap(kv, &key, bytes.as_deref(), owner, now + lease).await
}

/// Extends `owner`'s claim to `lease` from now, between slices of a long run. False if the claim
/// is someone else's, gone, or already expired: another runner may have taken the job since, so
/// the caller must stop and write nothing.
pub async fn renew(kv: &impl KeyValue, clock: &impl Clock, id: &str, owner: &str, lease: Duration) -> anyhow::Result<bool> {
    let key = keys::claim(id);
    let now = clock.now();
    let (bytes, held) = read(kv, &key).await?;
    if !held.is_some_and(|c| c.owner == owner && c.expires_at > now) {
        return Ok(false);
    }
    swap(kv, &key, bytes.as_deref(), owner, now + lease).await
}

/// Frees the claim if `owner` still holds it: an already expired record in its place.
pub async fn release(kv: &impl KeyValue, clock: &impl Clock, id: &str, owner: &str) -> anyhow::Result<()> {
    let key = keys::claim(id);
    let (bytes, held) = read(kv, &key).await?;
    if held.is_some_and(|c| c.owner == owner) {
        // Refused: someone took it over after our lease lapsed; it is theirs now.
        swap(kv, &key, bytes.as_deref(), owner, clock.now()).await?;
    }
    Ok(())
}

/// Whether anyone holds a live claim on job `id` (tests and diagnostics).
pub async fn holder(kv: &impl KeyValue, clock: &impl Clock, id: &str) -> anyhow::Result<Option<String>> {
    let (_, held) = read(kv, &keys::claim(id)).await?;
    Ok(held.filter(|c| c.expires_at > clock.now()).map(|c| c.owner))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{ManualClock, MemoryKv};
    use futures::executor::block_on;

    fn start() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-03-22T15:00:00Z").unwrap().to_utc()
    }

    #[test]
    fn racing_claimers_get_one_winner() {
        let kv = MemoryKv::new();
        let clock = ManualClock::new(start());
        let lease = Duration::seconds(30);
        let owners: Vec<String> = (0..6).map(|i| format!("owner{i}")).collect();
        // MemoryKv yields before every call, so all six read the free claim before any swaps.
        let wins = block_on(futures::future::join_all(owners.iter().map(|o| acquire(&kv, &clock, "job", o, lease))));
        let winners: Vec<&String> = owners.iter().zip(&wins).filter(|(_, w)| *w.as_ref().unwrap()).map(|(o, _)| o).collect();
        assert_eq!(winners.len(), 1);
        assert_eq!(block_on(holder(&kv, &clock, "job")).unwrap().as_ref(), Some(winners[0]));
    }

    #[test]
    fn racing_takeovers_of_an_expired_claim_get_one_winner() {
        let kv = MemoryKv::new();
        let clock = ManualClock::new(start());
        let lease = Duration::seconds(30);
        block_on(async {
            assert!(acquire(&kv, &clock, "job", "crashed", lease).await.unwrap());
            clock.advance(Duration::seconds(31));
            let owners = ["a", "b", "c"];
            let wins = futures::future::join_all(owners.iter().map(|o| acquire(&kv, &clock, "job", o, lease))).await;
            assert_eq!(wins.iter().filter(|w| *w.as_ref().unwrap()).count(), 1);
            assert!(!renew(&kv, &clock, "job", "crashed", lease).await.unwrap(), "the crashed runner lost it");
        });
    }

    #[test]
    fn a_swap_from_a_stale_read_is_refused() {
        let kv = MemoryKv::new();
        let clock = ManualClock::new(start());
        let lease = Duration::seconds(30);
        block_on(async {
            let key = keys::claim("j");
            // Both saw the claim free; "a" swapped first, so "b"'s swap from the free state fails.
            let (free, _) = read(&kv, &key).await.unwrap();
            assert!(acquire(&kv, &clock, "j", "a", lease).await.unwrap());
            assert!(!swap(&kv, &key, free.as_deref(), "b", clock.now() + lease).await.unwrap());
            assert_eq!(holder(&kv, &clock, "j").await.unwrap().as_deref(), Some("a"));
        });
    }

    #[test]
    fn a_live_claim_blocks_others_and_an_expired_or_released_one_does_not() {
        let kv = MemoryKv::new();
        let clock = ManualClock::new(start());
        let lease = Duration::seconds(30);
        block_on(async {
            assert!(acquire(&kv, &clock, "j", "a", lease).await.unwrap());
            assert!(!acquire(&kv, &clock, "j", "b", lease).await.unwrap());
            assert!(acquire(&kv, &clock, "j", "a", lease).await.unwrap(), "re-entrant");
            clock.advance(Duration::seconds(31));
            assert!(acquire(&kv, &clock, "j", "b", lease).await.unwrap());
            release(&kv, &clock, "j", "a").await.unwrap();
            assert_eq!(holder(&kv, &clock, "j").await.unwrap().as_deref(), Some("b"), "a no longer holds it");
            release(&kv, &clock, "j", "b").await.unwrap();
            assert_eq!(holder(&kv, &clock, "j").await.unwrap(), None);
            assert!(!renew(&kv, &clock, "j", "b", lease).await.unwrap(), "released");
            assert!(acquire(&kv, &clock, "j", "c", lease).await.unwrap(), "free at once, no lease to wait out");
        });
    }

    #[test]
    fn renewing_extends_a_live_claim_and_fails_once_it_is_lost() {
        let kv = MemoryKv::new();
        let clock = ManualClock::new(start());
        let lease = Duration::seconds(30);
        block_on(async {
            assert!(!renew(&kv, &clock, "j", "a", lease).await.unwrap(), "nothing to renew");
            assert!(acquire(&kv, &clock, "j", "a", lease).await.unwrap());
            for _ in 0..4 {
                clock.advance(Duration::seconds(20));
                assert!(renew(&kv, &clock, "j", "a", lease).await.unwrap());
                assert!(!acquire(&kv, &clock, "j", "b", lease).await.unwrap(), "renewed, still held");
            }
            clock.advance(Duration::seconds(31));
            assert!(!renew(&kv, &clock, "j", "a", lease).await.unwrap(), "expired: may be taken");
            assert!(acquire(&kv, &clock, "j", "b", lease).await.unwrap());
            assert!(!renew(&kv, &clock, "j", "a", lease).await.unwrap(), "taken");
            assert!(renew(&kv, &clock, "j", "b", lease).await.unwrap());
        });
    }
}
