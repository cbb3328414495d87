//! The key-value operations job storage needs, shaped like `spin:key-value` (no transactions, no
//! prefix scans) plus `wasi:keyvalue`'s compare-and-swap, and a clock. Components adapt
//! spin-sdk's `Store` and `wasi:keyvalue` bucket; tests use `MemoryKv` and `ManualClock`
//! (compiled for tests only), which yield at every call so joined futures interleave like racing
//! requests.

use std::time::Duration;

use chrono::{DateTime, Utc};

#[allow(async_fn_in_trait)] // used only through generics in single-threaded guests
pub trait KeyValue {
    async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>>;
    async fn set(&self, key: &str, value: &[u8]) -> anyhow::Result<()>;
    async fn delete(&self, key: &str) -> anyhow::Result<()>;
    /// Every key in the store: the only way to enumerate in Spin, so used only by the sweep.
    async fn get_keys(&self) -> anyhow::Result<Vec<String>>;
    /// Sets `key` to `new` only if it still holds `current` (`None`: absent), atomically against
    /// every other writer (other hosts included); true if it did.
    async fn compare_and_swap(&self, key: &str, current: Option<&[u8]>, new: &[u8]) -> anyhow::Result<bool>;
}

/// A write the store refused for lack of space: Spin's `store-table-full`, which kana-host answers
/// when SQLite's disk or database is full. Adapters return it (inside the `anyhow::Error`) so the
/// component can answer 507 instead of a retryable 503.
#[derive(Debug, thiserror::Error)]
#[error("the key-value store is full: {0}")]
pub struct StoreFull(pub String);

/// Whether a store error (anywhere in its chain) is [`StoreFull`].
pub fn is_store_full(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| cause.is::<StoreFull>())
}

#[allow(async_fn_in_trait)]
pub trait Clock {
    fn now(&self) -> DateTime<Utc>;
    async fn sleep(&self, duration: Duration);
}

#[cfg(test)]
pub use doubles::{ManualClock, MemoryKv};

/// Test doubles: they never ship in a component.
#[cfg(test)]
mod doubles {
    use std::cell::{Cell, RefCell};
    use std::collections::BTreeMap;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use chrono::{DateTime, Utc};

    use super::{Clock, KeyValue};

    /// In-memory store for tests. Counts reads so tests can check a tick does not read every job.
    #[derive(Default)]
    pub struct MemoryKv {
        map: RefCell<BTreeMap<String, Vec<u8>>>,
        gets: Cell<usize>,
    }

    impl MemoryKv {
        pub fn new() -> Self {
            Self::default()
        }
        pub fn gets(&self) -> usize {
            self.gets.get()
        }
        pub fn keys_with_prefix(&self, prefix: &str) -> Vec<String> {
            self.map.borrow().keys().filter(|k| k.starts_with(prefix)).cloned().collect()
        }
        pub fn len(&self) -> usize {
            self.map.borrow().len()
        }
        pub fn is_empty(&self) -> bool {
            self.map.borrow().is_empty()
        }
    }

    impl KeyValue for MemoryKv {
        async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
            YieldNow(false).await;
            self.gets.set(self.gets.get() + 1);
            Ok(self.map.borrow().get(key).cloned())
        }
        async fn set(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
            YieldNow(false).await;
            self.map.borrow_mut().insert(key.to_owned(), value.to_vec());
            Ok(())
        }
        async fn delete(&self, key: &str) -> anyhow::Result<()> {
            YieldNow(false).await;
            self.map.borrow_mut().remove(key);
            Ok(())
        }
        async fn get_keys(&self) -> anyhow::Result<Vec<String>> {
            YieldNow(false).await;
            Ok(self.map.borrow().keys().cloned().collect())
        }
        async fn compare_and_swap(&self, key: &str, current: Option<&[u8]>, new: &[u8]) -> anyhow::Result<bool> {
            YieldNow(false).await;
            // No await between the comparison and the write: atomic on one thread.
            let mut map = self.map.borrow_mut();
            if map.get(key).map(Vec::as_slice) != current {
                return Ok(false);
            }
            map.insert(key.to_owned(), new.to_vec());
            Ok(true)
        }
    }

    /// A clock tests move by hand. `sleep` only yields a few times: enough for other joined futures
    /// to run their next steps.
    pub struct ManualClock(Cell<DateTime<Utc>>);

    impl ManualClock {
        pub fn new(start: DateTime<Utc>) -> Self {
            Self(Cell::new(start))
        }
        pub fn advance(&self, by: chrono::Duration) {
            self.0.set(self.0.get() + by);
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> DateTime<Utc> {
            self.0.get()
        }
        async fn sleep(&self, _duration: Duration) {
            for _ in 0..8 {
                YieldNow(false).await;
            }
        }
    }

    /// Returns Pending once, so an executor polls the other futures before this one continues.
    struct YieldNow(bool);

    impl Future for YieldNow {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                Poll::Ready(())
            } else {
                self.0 = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}
