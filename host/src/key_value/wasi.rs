//! `wasi:keyvalue/imports@0.2.0-draft2` for guests (what Spin 3+ gives components besides
//! `spin:key-value`): `store` (buckets are the same labelled stores, with the same manifest
//! permissions), `atomics` (`increment`, and `cas` + `swap`: a true compare-and-swap against
//! every other writer, other hosts included) and `batch` (one key at a time: not atomic, as the
//! interface allows).
//!
//! A `cas` keeps the value its key held when it was made; `swap` writes only if the key still
//! holds that value (absent included), else answers `cas-failed` with a fresh `cas` to retry from.

use anyhow::Result;
use wasmtime::component::{HasSelf, Linker, Resource};

use super::{OpenError, OpenStore};
use crate::bindings::spin::wasi::keyvalue::{atomics, batch, store};
use crate::state::HostState;

use store::{Error, KeyResponse};

/// The host side of a guest's `cas` resource.
pub struct Cas {
    store: OpenStore,
    key: String,
    current: Option<Vec<u8>>,
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> Result<()> {
    store::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
    atomics::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
    batch::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
    Ok(())
}

fn other(e: impl std::fmt::Display) -> Error {
    Error::Other(e.to_string())
}

/// Store errors keep their whole message (this interface has no `store-table-full`).
fn guest_error(e: anyhow::Error) -> Error {
    Error::Other(format!("{e:#}"))
}

impl HostState {
    fn bucket(&self, bucket: &Resource<OpenStore>) -> Result<OpenStore, Error> {
        self.table.get(bucket).cloned().map_err(other)
    }
}

async fn new_cas(store: OpenStore, key: String) -> Result<Cas, Error> {
    let current = store.backend.get(&store.label, &key).await.map_err(guest_error)?;
    Ok(Cas { store, key, current })
}

impl store::Host for HostState {
    async fn open(&mut self, identifier: String) -> Result<Resource<OpenStore>, Error> {
        let store = self.key_value.open(&identifier).map_err(|e| match e {
            OpenError::AccessDenied => Error::AccessDenied,
            OpenError::NoSuchStore => Error::NoSuchStore,
        })?;
        self.table.push(store).map_err(other)
    }
}

impl store::HostBucket for HostState {
    async fn get(&mut self, bucket: Resource<OpenStore>, key: String) -> Result<Option<Vec<u8>>, Error> {
        let s = self.bucket(&bucket)?;
        s.backend.get(&s.label, &key).await.map_err(guest_error)
    }

    async fn set(&mut self, bucket: Resource<OpenStore>, key: String, value: Vec<u8>) -> Result<(), Error> {
        let s = self.bucket(&bucket)?;
        s.backend.set(&s.label, &key, &value).await.map_err(guest_error)
    }

    async fn delete(&mut self, bucket: Resource<OpenStore>, key: String) -> Result<(), Error> {
        let s = self.bucket(&bucket)?;
        s.backend.delete(&s.label, &key).await.map_err(guest_error)
    }

    async fn exists(&mut self, bucket: Resource<OpenStore>, key: String) -> Result<bool, Error> {
        let s = self.bucket(&bucket)?;
        s.backend.exists(&s.label, &key).await.map_err(guest_error)
    }

    /// Every key in one response (no cursor), as Spin answers.
    async fn list_keys(&mut self, bucket: Resource<OpenStore>, _cursor: Option<String>) -> Result<KeyResponse, Error> {
        let s = self.bucket(&bucket)?;
        let keys = s.backend.get_keys(&s.label).await.map_err(guest_error)?;
        Ok(KeyResponse { keys, cursor: None })
    }

    async fn drop(&mut self, bucket: Resource<OpenStore>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for HostState {
    async fn increment(&mut self, bucket: Resource<OpenStore>, key: String, delta: i64) -> Result<i64, Error> {
        let s = self.bucket(&bucket)?;
        s.backend.increment(&s.label, &key, delta).await.map_err(guest_error)
    }

    async fn swap(&mut self, cas: Resource<Cas>, value: Vec<u8>) -> Result<(), atomics::CasError> {
        let store_error = |e| atomics::CasError::StoreError(e);
        let Cas { store, key, current } = self.table.delete(cas).map_err(|e| store_error(other(e)))?;
        let swapped = store.backend.compare_and_swap(&store.label, &key, current.as_deref(), &value).await.map_err(|e| store_error(guest_error(e)))?;
        if swapped {
            return Ok(());
        }
        let fresh = new_cas(store, key).await.map_err(store_error)?;
        Err(atomics::CasError::CasFailed(self.table.push(fresh).map_err(|e| store_error(other(e)))?))
    }
}

impl atomics::HostCas for HostState {
    async fn new(&mut self, bucket: Resource<OpenStore>, key: String) -> Result<Resource<Cas>, Error> {
        let cas = new_cas(self.bucket(&bucket)?, key).await?;
        self.table.push(cas).map_err(other)
    }

    async fn current(&mut self, cas: Resource<Cas>) -> Result<Option<Vec<u8>>, Error> {
        self.table.get(&cas).map(|c| c.current.clone()).map_err(other)
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for HostState {
    async fn get_many(&mut self, bucket: Resource<OpenStore>, keys: Vec<String>) -> Result<Vec<(String, Option<Vec<u8>>)>, Error> {
        let s = self.bucket(&bucket)?;
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            let value = s.backend.get(&s.label, &key).await.map_err(guest_error)?;
            found.push((key, value));
        }
        Ok(found)
    }

    async fn set_many(&mut self, bucket: Resource<OpenStore>, key_values: Vec<(String, Vec<u8>)>) -> Result<(), Error> {
        let s = self.bucket(&bucket)?;
        for (key, value) in &key_values {
            s.backend.set(&s.label, key, value).await.map_err(guest_error)?;
        }
        Ok(())
    }

    async fn delete_many(&mut self, bucket: Resource<OpenStore>, keys: Vec<String>) -> Result<(), Error> {
        let s = self.bucket(&bucket)?;
        for key in &keys {
            s.backend.delete(&s.label, key).await.map_err(guest_error)?;
        }
        Ok(())
    }
}
