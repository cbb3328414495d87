//! In-memory [`KeyValueBackend`] for unit tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use anyhow::Result;

use super::KeyValueBackend;

#[derive(Default)]
pub struct MemoryBackend {
    entries: Mutex<BTreeMap<(String, String), Vec<u8>>>,
}

impl KeyValueBackend for MemoryBackend {
    fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.entries.lock().unwrap().get(&(store.into(), key.into())).cloned())
    }

    fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<()> {
        self.entries.lock().unwrap().insert((store.into(), key.into()), value.to_vec());
        Ok(())
    }

    fn delete(&self, store: &str, key: &str) -> Result<()> {
        self.entries.lock().unwrap().remove(&(store.into(), key.into()));
        Ok(())
    }

    fn get_keys(&self, store: &str) -> Result<Vec<String>> {
        let entries = self.entries.lock().unwrap();
        Ok(entries.keys().filter(|(s, _)| s == store).map(|(_, k)| k.clone()).collect())
    }
}
