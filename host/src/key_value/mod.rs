//! Key-value stores for guests: `spin:key-value@3.0.0` (this file) and
//! `wasi:keyvalue/imports@0.2.0-draft2` (store, atomics, batch; `wasi.rs`), both over the same
//! [`KeyValueBackend`]s: SQLite by default, Redis or another SQLite file per store label through
//! the runtime config (`crate::runtime_config`), memory in tests.
//!
//! A component may open only the stores its manifest lists in `key_value_stores`; any other
//! label the application uses gives `access-denied`, a label nobody declares `no-such-store`.

mod memory;
mod redis;
mod sqlite;
pub mod wasi;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Result;
use futures::future::BoxFuture;
use wasmtime::component::{Accessor, FutureReader, HasData, Linker, Resource, StreamReader};

pub use memory::MemoryBackend;
pub use redis::RedisBackend;
pub use sqlite::SqliteBackend;

use crate::bindings::spin::spin::key_value::key_value::{self as wit, Error};
use crate::state::HostState;

/// Where stores keep their data. `store` is the label a guest opened: SQLite and memory keep
/// labels apart in one table; Redis, like Spin's, keeps keys as they are (one label per server
/// or database). `compare_and_swap` and `increment` are atomic against every other writer of the
/// same data, other hosts included.
pub trait KeyValueBackend: Send + Sync + 'static {
    fn get<'a>(&'a self, store: &'a str, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>>;
    fn set<'a>(&'a self, store: &'a str, key: &'a str, value: &'a [u8]) -> BoxFuture<'a, Result<()>>;
    fn delete<'a>(&'a self, store: &'a str, key: &'a str) -> BoxFuture<'a, Result<()>>;
    fn exists<'a>(&'a self, store: &'a str, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { Ok(self.get(store, key).await?.is_some()) })
    }
    fn get_keys<'a>(&'a self, store: &'a str) -> BoxFuture<'a, Result<Vec<String>>>;
    /// Sets `key` to `new` only if its value is still `current` (`None`: absent); true if it did.
    fn compare_and_swap<'a>(&'a self, store: &'a str, key: &'a str, current: Option<&'a [u8]>, new: &'a [u8]) -> BoxFuture<'a, Result<bool>>;
    /// Adds `delta` to the decimal integer stored at `key` (absent: 0) and returns the sum.
    fn increment<'a>(&'a self, store: &'a str, key: &'a str, delta: i64) -> BoxFuture<'a, Result<i64>>;
}

/// A value `increment` cannot add to.
#[derive(Debug, thiserror::Error)]
#[error("the value of `{0}` is not a decimal 64-bit integer")]
pub struct NotAnInteger(pub String);

/// The sum `increment` stores: `value` read as a decimal integer (absent: 0) plus `delta`.
fn incremented(key: &str, value: Option<&[u8]>, delta: i64) -> Result<i64> {
    let current = match value {
        None => 0,
        Some(bytes) => std::str::from_utf8(bytes).ok().and_then(|s| s.parse::<i64>().ok()).ok_or_else(|| NotAnInteger(key.to_owned()))?,
    };
    current.checked_add(delta).ok_or_else(|| anyhow::anyhow!("incrementing `{key}` overflows"))
}

/// A backend's refusal for lack of space (a full disk or SQLite database, Redis `OOM`).
#[derive(Debug, thiserror::Error)]
#[error("the key-value store is full: {0}")]
pub struct StoreFull(pub String);

/// Whether an error from a backend means the store is full (guests get `store-table-full`).
pub fn is_full(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.is::<StoreFull>())
}

/// The backend of each store label the application uses (see `crate::runtime_config`).
pub struct Stores {
    by_label: BTreeMap<String, Arc<dyn KeyValueBackend>>,
}

impl Stores {
    pub fn new(by_label: BTreeMap<String, Arc<dyn KeyValueBackend>>) -> Self {
        Self { by_label }
    }

    pub fn backend(&self, label: &str) -> Option<Arc<dyn KeyValueBackend>> {
        self.by_label.get(label).cloned()
    }
}

/// What one component may reach: the stores and its permitted store labels.
#[derive(Clone)]
pub struct KeyValueAccess {
    stores: Arc<Stores>,
    allowed: Arc<BTreeSet<String>>,
    /// Every label some component of the application declares (plus `default`).
    known: Arc<BTreeSet<String>>,
}

/// Why a label does not open; each interface maps it to its own error type.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    AccessDenied,
    NoSuchStore,
}

impl KeyValueAccess {
    /// One backend for every known label (tests, benches).
    pub fn new(backend: Arc<dyn KeyValueBackend>, allowed: BTreeSet<String>, known: Arc<BTreeSet<String>>) -> Self {
        let stores = Stores::new(known.iter().map(|label| (label.clone(), backend.clone())).collect());
        Self::with_stores(Arc::new(stores), allowed, known)
    }

    pub fn with_stores(stores: Arc<Stores>, allowed: BTreeSet<String>, known: Arc<BTreeSet<String>>) -> Self {
        Self { stores, allowed: Arc::new(allowed), known }
    }

    pub(crate) fn open(&self, label: &str) -> Result<OpenStore, OpenError> {
        if self.allowed.contains(label)
            && let Some(backend) = self.stores.backend(label)
        {
            Ok(OpenStore { label: label.to_owned(), backend })
        } else if self.known.contains(label) {
            Err(OpenError::AccessDenied)
        } else {
            Err(OpenError::NoSuchStore)
        }
    }
}

/// The host side of a guest's open store (`spin:key-value` store, `wasi:keyvalue` bucket).
#[derive(Clone)]
pub struct OpenStore {
    pub(crate) label: String,
    pub(crate) backend: Arc<dyn KeyValueBackend>,
}

/// Marker type the generated traits are implemented on.
pub struct KeyValue;

impl HasData for KeyValue {
    type Data<'a> = &'a mut HostState;
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> Result<()> {
    wit::add_to_linker::<HostState, KeyValue>(linker, |state| state)?;
    wasi::add_to_linker(linker)
}

/// The guest's open store behind `store`.
fn opened<S>(accessor: &Accessor<S, KeyValue>, store: &Resource<OpenStore>) -> Result<OpenStore, Error> {
    accessor.with(|mut access| access.get().table.get(store).cloned()).map_err(|e| Error::Other(e.to_string()))
}

/// A full store is `store-table-full` (guests answer 507), other failures `error::other`.
fn guest_error(e: anyhow::Error) -> Error {
    if is_full(&e) { Error::StoreTableFull } else { Error::Other(format!("{e:#}")) }
}

impl<T> wit::HostStoreWithStore<T> for KeyValue {
    async fn open(accessor: &Accessor<T, Self>, label: String) -> Result<Resource<OpenStore>, Error> {
        accessor.with(|mut access| {
            let state = access.get();
            let store = state.key_value.open(&label).map_err(|e| match e {
                OpenError::AccessDenied => Error::AccessDenied,
                OpenError::NoSuchStore => Error::NoSuchStore,
            })?;
            state.table.push(store).map_err(|e| Error::Other(e.to_string()))
        })
    }

    async fn get(accessor: &Accessor<T, Self>, store: Resource<OpenStore>, key: String) -> Result<Option<Vec<u8>>, Error> {
        let s = opened(accessor, &store)?;
        s.backend.get(&s.label, &key).await.map_err(guest_error)
    }

    async fn set(accessor: &Accessor<T, Self>, store: Resource<OpenStore>, key: String, value: Vec<u8>) -> Result<(), Error> {
        let s = opened(accessor, &store)?;
        s.backend.set(&s.label, &key, &value).await.map_err(guest_error)
    }

    async fn delete(accessor: &Accessor<T, Self>, store: Resource<OpenStore>, key: String) -> Result<(), Error> {
        let s = opened(accessor, &store)?;
        s.backend.delete(&s.label, &key).await.map_err(guest_error)
    }

    async fn exists(accessor: &Accessor<T, Self>, store: Resource<OpenStore>, key: String) -> Result<bool, Error> {
        let s = opened(accessor, &store)?;
        s.backend.exists(&s.label, &key).await.map_err(guest_error)
    }

    async fn get_keys(
        accessor: &Accessor<T, Self>,
        store: Resource<OpenStore>,
    ) -> wasmtime::Result<(StreamReader<String>, FutureReader<Result<(), Error>>)> {
        let keys = match opened(accessor, &store) {
            Ok(s) => s.backend.get_keys(&s.label).await.map_err(guest_error),
            Err(e) => Err(e),
        };
        accessor.with(|mut access| {
            let (keys, result) = match keys {
                Ok(keys) => (keys, Ok(())),
                Err(e) => (Vec::new(), Err(e)),
            };
            let stream = StreamReader::new(&mut access, keys)?;
            let future = FutureReader::new(&mut access, async move { Ok::<_, wasmtime::Error>(result) })?;
            Ok((stream, future))
        })
    }

    async fn drop(accessor: &Accessor<T, Self>, store: Resource<OpenStore>) -> wasmtime::Result<()> {
        accessor.with(|mut access| access.get().table.delete(store).map(|_| ()))?;
        Ok(())
    }
}

impl wit::HostStore for HostState {}
impl wit::Host for HostState {}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The contract every backend must keep, run against each implementation on one label.
    pub(crate) async fn backend_contract(backend: &dyn KeyValueBackend) {
        let s = "default";
        assert_eq!(backend.get(s, "k").await.unwrap(), None);
        assert!(!backend.exists(s, "k").await.unwrap());
        backend.set(s, "k", b"one").await.unwrap();
        backend.set(s, "k", b"two").await.unwrap();
        backend.set(s, "other", b"x").await.unwrap();
        backend.set(s, "empty", b"").await.unwrap();
        assert_eq!(backend.get(s, "k").await.unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(backend.get(s, "empty").await.unwrap().as_deref(), Some(&b""[..]), "empty is not absent");
        assert!(backend.exists(s, "k").await.unwrap());
        let mut keys = backend.get_keys(s).await.unwrap();
        keys.sort();
        assert_eq!(keys, ["empty", "k", "other"]);
        backend.delete(s, "k").await.unwrap();
        backend.delete(s, "never-there").await.unwrap();
        assert_eq!(backend.get(s, "k").await.unwrap(), None);

        // Compare-and-swap: only from the value it expects, absent included.
        assert!(backend.compare_and_swap(s, "c", None, b"first").await.unwrap());
        assert!(!backend.compare_and_swap(s, "c", None, b"again").await.unwrap(), "no longer absent");
        assert!(!backend.compare_and_swap(s, "c", Some(b"stale"), b"x").await.unwrap());
        assert!(backend.compare_and_swap(s, "c", Some(b"first"), b"second").await.unwrap());
        assert_eq!(backend.get(s, "c").await.unwrap().as_deref(), Some(&b"second"[..]));
        assert!(!backend.compare_and_swap(s, "gone", Some(b""), b"x").await.unwrap(), "absent is not empty");
        assert!(backend.compare_and_swap(s, "empty", Some(b""), b"full").await.unwrap());

        // Increment: decimal integers, absent counts as 0.
        assert_eq!(backend.increment(s, "n", 5).await.unwrap(), 5);
        assert_eq!(backend.increment(s, "n", -7).await.unwrap(), -2);
        assert_eq!(backend.get(s, "n").await.unwrap().as_deref(), Some(&b"-2"[..]));
        assert!(backend.increment(s, "other", 1).await.is_err(), "not a number");
        assert_eq!(backend.get(s, "other").await.unwrap().as_deref(), Some(&b"x"[..]), "left as it was");
    }

    /// Racing swaps from the same read: exactly one wins each round, so a counter kept by CAS
    /// loses no update.
    pub(crate) async fn racing_swaps_lose_no_update(backend: Arc<dyn KeyValueBackend>) {
        let rounds = 25;
        let racer = |backend: Arc<dyn KeyValueBackend>| async move {
            let mut wins = 0;
            for _ in 0..rounds {
                loop {
                    let current = backend.get("default", "counter").await.unwrap();
                    let n: u64 = current.as_deref().map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
                    if backend.compare_and_swap("default", "counter", current.as_deref(), (n + 1).to_string().as_bytes()).await.unwrap() {
                        wins += 1;
                        break;
                    }
                }
            }
            wins
        };
        let tasks: Vec<_> = (0..4).map(|_| tokio::spawn(racer(backend.clone()))).collect();
        let mut wins = 0;
        for task in tasks {
            wins += task.await.unwrap();
        }
        assert_eq!(wins, 4 * rounds);
        assert_eq!(backend.get("default", "counter").await.unwrap(), Some((4 * rounds).to_string().into_bytes()));
    }

    /// Labels sharing one SQLite table (or the memory map) stay apart. Not part of the contract:
    /// Redis keeps keys as they are, like Spin's, so two labels on one server share them.
    pub(crate) async fn labels_stay_apart(backend: &dyn KeyValueBackend) {
        backend.set("default", "k", b"default's").await.unwrap();
        backend.set("jobs", "k", b"jobs'").await.unwrap();
        assert_eq!(backend.get("default", "k").await.unwrap().as_deref(), Some(&b"default's"[..]));
        assert_eq!(backend.get_keys("jobs").await.unwrap(), ["k"]);
        assert!(backend.compare_and_swap("jobs", "k", Some(b"jobs'"), b"jobs''").await.unwrap());
        assert_eq!(backend.get("default", "k").await.unwrap().as_deref(), Some(&b"default's"[..]));
    }

    #[tokio::test]
    async fn memory_backend_keeps_the_contract() {
        backend_contract(&MemoryBackend::default()).await;
        labels_stay_apart(&MemoryBackend::default()).await;
        racing_swaps_lose_no_update(Arc::new(MemoryBackend::default())).await;
    }

    #[test]
    fn access_follows_the_manifest() {
        let known: Arc<BTreeSet<String>> = Arc::new(["default".into(), "jobs".into()].into());
        let access = KeyValueAccess::new(Arc::new(MemoryBackend::default()), ["default".into()].into(), known);
        assert!(access.open("default").is_ok());
        assert_eq!(access.open("jobs").err(), Some(OpenError::AccessDenied));
        assert_eq!(access.open("nope").err(), Some(OpenError::NoSuchStore));
    }

    #[test]
    fn increments_parse_decimal_integers_only() {
        assert_eq!(incremented("k", None, 3).unwrap(), 3);
        assert_eq!(incremented("k", Some(b"-4"), 3).unwrap(), -1);
        assert!(incremented("k", Some(b"4.5"), 1).unwrap_err().is::<NotAnInteger>());
        assert!(incremented("k", Some(i64::MAX.to_string().as_bytes()), 1).is_err(), "overflow");
    }
}
