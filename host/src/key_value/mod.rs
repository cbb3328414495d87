//! `spin:key-value@3.0.0` for guests, over a [`KeyValueBackend`] (SQLite by default).
//!
//! A component may open only the stores its manifest lists in `key_value_stores`; any other
//! label the application uses gives `access-denied`, a label nobody declares `no-such-store`.

mod memory;
mod sqlite;

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::Result;
use wasmtime::component::{Accessor, FutureReader, HasData, Linker, Resource, StreamReader};

pub use memory::MemoryBackend;
pub use sqlite::{SqliteBackend, is_full};

use crate::bindings::spin::spin::key_value::key_value::{self as wit, Error};
use crate::state::HostState;

/// Where stores keep their data. Methods are blocking; the host calls them off the async runtime.
pub trait KeyValueBackend: Send + Sync + 'static {
    fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>>;
    fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<()>;
    fn delete(&self, store: &str, key: &str) -> Result<()>;
    fn exists(&self, store: &str, key: &str) -> Result<bool> {
        Ok(self.get(store, key)?.is_some())
    }
    fn get_keys(&self, store: &str) -> Result<Vec<String>>;
}

/// What one component may reach: the shared backend and its permitted store labels.
#[derive(Clone)]
pub struct KeyValueAccess {
    backend: Arc<dyn KeyValueBackend>,
    allowed: Arc<BTreeSet<String>>,
    /// Every label some component of the application declares (plus `default`).
    known: Arc<BTreeSet<String>>,
}

impl KeyValueAccess {
    pub fn new(backend: Arc<dyn KeyValueBackend>, allowed: BTreeSet<String>, known: Arc<BTreeSet<String>>) -> Self {
        Self { backend, allowed: Arc::new(allowed), known }
    }

    fn open(&self, label: &str) -> Result<OpenStore, Error> {
        if self.allowed.contains(label) {
            Ok(OpenStore { label: label.to_owned() })
        } else if self.known.contains(label) {
            Err(Error::AccessDenied)
        } else {
            Err(Error::NoSuchStore)
        }
    }
}

/// The host side of a guest's `store` resource.
pub struct OpenStore {
    label: String,
}

/// Marker type the generated traits are implemented on.
pub struct KeyValue;

impl HasData for KeyValue {
    type Data<'a> = &'a mut HostState;
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> Result<()> {
    wit::add_to_linker::<HostState, KeyValue>(linker, |state| state)?;
    Ok(())
}

/// Runs a blocking backend call on tokio's blocking pool, mapping a full disk or database to
/// `store-table-full` (guests answer 507) and other failures to `error::other`.
async fn run_blocking<S, T: Send + 'static>(
    accessor: &Accessor<S, KeyValue>,
    store: &Resource<OpenStore>,
    op: impl FnOnce(&dyn KeyValueBackend, &str) -> Result<T> + Send + 'static,
) -> Result<T, Error> {
    let (backend, label) = accessor.with(|mut access| {
        let state = access.get();
        let label = state.table.get(store).map(|s| s.label.clone());
        (state.key_value.backend.clone(), label)
    });
    let label = label.map_err(|e| Error::Other(e.to_string()))?;
    tokio::task::spawn_blocking(move || op(backend.as_ref(), &label))
        .await
        .map_err(|e| Error::Other(e.to_string()))?
        .map_err(|e| if is_full(&e) { Error::StoreTableFull } else { Error::Other(format!("{e:#}")) })
}

impl<T> wit::HostStoreWithStore<T> for KeyValue {
    async fn open(accessor: &Accessor<T, Self>, label: String) -> Result<Resource<OpenStore>, Error> {
        accessor.with(|mut access| {
            let state = access.get();
            let store = state.key_value.open(&label)?;
            state.table.push(store).map_err(|e| Error::Other(e.to_string()))
        })
    }

    async fn get(accessor: &Accessor<T, Self>, store: Resource<OpenStore>, key: String) -> Result<Option<Vec<u8>>, Error> {
        run_blocking(accessor, &store, move |b, label| b.get(label, &key)).await
    }

    async fn set(accessor: &Accessor<T, Self>, store: Resource<OpenStore>, key: String, value: Vec<u8>) -> Result<(), Error> {
        run_blocking(accessor, &store, move |b, label| b.set(label, &key, &value)).await
    }

    async fn delete(accessor: &Accessor<T, Self>, store: Resource<OpenStore>, key: String) -> Result<(), Error> {
        run_blocking(accessor, &store, move |b, label| b.delete(label, &key)).await
    }

    async fn exists(accessor: &Accessor<T, Self>, store: Resource<OpenStore>, key: String) -> Result<bool, Error> {
        run_blocking(accessor, &store, move |b, label| b.exists(label, &key)).await
    }

    async fn get_keys(
        accessor: &Accessor<T, Self>,
        store: Resource<OpenStore>,
    ) -> wasmtime::Result<(StreamReader<String>, FutureReader<Result<(), Error>>)> {
        let keys = run_blocking(accessor, &store, |b, label| b.get_keys(label)).await;
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
mod tests {
    use super::*;

    /// The contract every backend must keep, run against both implementations.
    pub(super) fn backend_contract(backend: &dyn KeyValueBackend) {
        assert_eq!(backend.get("default", "k").unwrap(), None);
        assert!(!backend.exists("default", "k").unwrap());
        backend.set("default", "k", b"one").unwrap();
        backend.set("default", "k", b"two").unwrap();
        backend.set("default", "other", b"x").unwrap();
        backend.set("jobs", "k", b"separate store").unwrap();
        assert_eq!(backend.get("default", "k").unwrap().as_deref(), Some(&b"two"[..]));
        assert!(backend.exists("default", "k").unwrap());
        let mut keys = backend.get_keys("default").unwrap();
        keys.sort();
        assert_eq!(keys, ["k", "other"]);
        backend.delete("default", "k").unwrap();
        backend.delete("default", "never-there").unwrap();
        assert_eq!(backend.get("default", "k").unwrap(), None);
        assert_eq!(backend.get("jobs", "k").unwrap().as_deref(), Some(&b"separate store"[..]));
    }

    #[test]
    fn memory_backend_keeps_the_contract() {
        backend_contract(&MemoryBackend::default());
    }

    #[test]
    fn access_follows_the_manifest() {
        let known: Arc<BTreeSet<String>> = Arc::new(["default".into(), "jobs".into()].into());
        let access = KeyValueAccess::new(Arc::new(MemoryBackend::default()), ["default".into()].into(), known);
        assert!(access.open("default").is_ok());
        assert!(matches!(access.open("jobs"), Err(Error::AccessDenied)));
        assert!(matches!(access.open("nope"), Err(Error::NoSuchStore)));
    }
}
