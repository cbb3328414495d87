//! Claims: who may run a job now. Spin key-value has no compare-and-swap, so a claim is a key
//! `{owner, expires_at}` that a runner writes only if it is absent or expired, then reads back
//! after a short settle delay; only a runner that still finds its own owner id proceeds.
//!
//! Limits (it is not linearizable): two runners that both read "free" and whose writes are more
//! than `settle` apart can both read back their own id if one writes after the other's read-back.
//! The runner then re-reads the job record, which the winner marks `running` with its own lease
//! right after its read-back; the late runner sees that and backs off. A double run therefore
//! needs two stalls longer than `settle` in the same race. A lease that expires while a run is
//! still going lets a second runner start, so runners work in slices and [`renew`] the claim
//! between them; a runner whose claim expired or changed hands stops without writing.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::job::keys;
use crate::kv::{Clock, KeyValue};

#[derive(Debug, Serialize, Deserialize)]
struct ClaimRecord {
    owner: String,
    expires_at: DateTime<Utc>,
}

async fn read(kv: &impl KeyValue, key: &str) -> anyhow::Result<Option<ClaimRecord>> {
    // An unreadable claim (e.g. a torn write) counts as absent: the job record still guards runs.
    Ok(kv.get(key).await?.and_then(|v| serde_json::from_slice(&v).ok()))
}

/// True when `owner` holds the claim on job `id` for `lease` from now.
pub async fn acquire(
    kv: &impl KeyValue,
    clock: &impl Clock,
    id: &str,
    owner: &str,
    lease: Duration,
    settle: std::time::Duration,
) -> anyhow::Result<bool> {
    let key = keys::claim(id);
    let now = clock.now();
    if let Some(held) = read(kv, &key).await?
        && held.owner != owner
        && held.expires_at > now
    {
        return Ok(false);
    }
    let record = ClaimRecord { owner: owner.to_owned(), expires_at: now + lease };
    kv.set(&key, &serde_json::to_vec(&record)?).await?;
    clock.sleep(settle).await;
    Ok(read(kv, &key).await?.is_some_and(|c| c.owner == owner))
}

/// Extends `owner`'s claim to `lease` from now, between slices of a long run. False if the claim
/// is someone else's, gone, or already expired: another runner may have taken the job since, so
/// the caller must stop and write nothing. Renewing only a live claim needs no settle: nobody
/// else writes a claim they read as live (see `acquire`).
pub async fn renew(kv: &impl KeyValue, clock: &impl Clock, id: &str, owner: &str, lease: Duration) -> anyhow::Result<bool> {
    let key = keys::claim(id);
    let now = clock.now();
    if !read(kv, &key).await?.is_some_and(|c| c.owner == owner && c.expires_at > now) {
        return Ok(false);
    }
    let record = ClaimRecord { owner: owner.to_owned(), expires_at: now + lease };
    kv.set(&key, &serde_json::to_vec(&record)?).await?;
    Ok(true)
}

/// Deletes the claim if `owner` still holds it.
pub async fn release(kv: &impl KeyValue, id: &str, owner: &str) -> anyhow::Result<()> {
    let key = keys::claim(id);
    if read(kv, &key).await?.is_some_and(|c| c.owner == owner) {
        kv.delete(&key).await?;
    }
    Ok(())
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
        let settle = std::time::Duration::from_millis(100);
        let owners: Vec<String> = (0..6).map(|i| format!("owner{i}")).collect();
        let wins = block_on(futures::future::join_all(
            owners.iter().map(|o| acquire(&kv, &clock, "job", o, lease, settle)),
        ));
        let winners = wins.into_iter().filter(|w| *w.as_ref().unwrap()).count();
        assert_eq!(winners, 1);
    }

    #[test]
    fn a_live_claim_blocks_others_and_an_expired_one_does_not() {
        let kv = MemoryKv::new();
        let clock = ManualClock::new(start());
        let lease = Duration::seconds(30);
        let settle = std::time::Duration::ZERO;
        block_on(async {
            assert!(acquire(&kv, &clock, "j", "a", lease, settle).await.unwrap());
            assert!(!acquire(&kv, &clock, "j", "b", lease, settle).await.unwrap());
            assert!(acquire(&kv, &clock, "j", "a", lease, settle).await.unwrap(), "re-entrant");
            clock.advance(Duration::seconds(31));
            assert!(acquire(&kv, &clock, "j", "b", lease, settle).await.unwrap());
            release(&kv, "j", "a").await.unwrap();
            assert!(kv.get(&keys::claim("j")).await.unwrap().is_some(), "a no longer holds it");
            release(&kv, "j", "b").await.unwrap();
            assert!(kv.is_empty());
        });
    }

    #[test]
    fn renewing_extends_a_live_claim_and_fails_once_it_is_lost() {
        let kv = MemoryKv::new();
        let clock = ManualClock::new(start());
        let lease = Duration::seconds(30);
        let settle = std::time::Duration::ZERO;
        block_on(async {
            assert!(!renew(&kv, &clock, "j", "a", lease).await.unwrap(), "nothing to renew");
            assert!(acquire(&kv, &clock, "j", "a", lease, settle).await.unwrap());
            for _ in 0..4 {
                clock.advance(Duration::seconds(20));
                assert!(renew(&kv, &clock, "j", "a", lease).await.unwrap());
                assert!(!acquire(&kv, &clock, "j", "b", lease, settle).await.unwrap(), "renewed, still held");
            }
            clock.advance(Duration::seconds(31));
            assert!(!renew(&kv, &clock, "j", "a", lease).await.unwrap(), "expired: may be taken");
            assert!(acquire(&kv, &clock, "j", "b", lease, settle).await.unwrap());
            assert!(!renew(&kv, &clock, "j", "a", lease).await.unwrap(), "taken");
            assert!(renew(&kv, &clock, "j", "b", lease).await.unwrap());
        });
    }
}
