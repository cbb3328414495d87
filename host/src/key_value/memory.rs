//! In-memory [`KeyValueBackend`] for unit tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use anyhow::Result;
use futures::future::BoxFuture;

use super::{KeyValueBackend, incremented};

#[derive(Default)]
pub struct MemoryBackend {
    entries: Mutex<BTreeMap<(String, String), Vec<u8>>>,
}

impl MemoryBackend {
    fn with<T: Send + 'static>(&self, op: impl FnOnce(&mut BTreeMap<(String, String), Vec<u8>>) -> Result<T>) -> BoxFuture<'_, Result<T>> {
        let result = op(&mut self.entries.lock().unwrap());
        Box::pin(async move { result })
    }
}

fn at(store: &str, key: &str) -> (String, String) {
    (store.to_owned(), key.to_owned())
}

impl KeyValueBackend for MemoryBackend {
    fn get<'a>(&'a self, store: &'a str, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        self.with(|e| Ok(e.get(&at(store, key)).cloned()))
    }

    fn set<'a>(&'a self, store: &'a str, key: &'a str, value: &'a [u8]) -> BoxFuture<'a, Result<()>> {
        self.with(|e| {
            e.insert(at(store, key), value.to_vec());
            Ok(())
        })
    }

    fn delete<'a>(&'a self, store: &'a str, key: &'a str) -> BoxFuture<'a, Result<()>> {
        self.with(|e| {
            e.remove(&at(store, key));
            Ok(())
        })
    }

    fn get_keys<'a>(&'a self, store: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        self.with(|e| Ok(e.keys().filter(|(s, _)| s == store).map(|(_, k)| k.clone()).collect()))
    }

    fn compare_and_swap<'a>(&'a self, store: &'a str, key: &'a str, current: Option<&'a [u8]>, new: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        self.with(|e| {
            if e.get(&at(store, key)).map(Vec::as_slice) != current {
                return Ok(false);
            }
            e.insert(at(store, key), new.to_vec());
            Ok(true)
        })
    }

    fn increment<'a>(&'a self, store: &'a str, key: &'a str, delta: i64) -> BoxFuture<'a, Result<i64>> {
        self.with(|e| {
            let sum = incremented(key, e.get(&at(store, key)).map(Vec::as_slice), delta)?;
            e.insert(at(store, key), sum.to_string().into_bytes());
            Ok(sum)
        })
    }
}
