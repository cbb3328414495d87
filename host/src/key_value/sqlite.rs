//! SQLite [`KeyValueBackend`] in Spin's layout, so `spin up` and this host share `.spin/` data:
//! one table `spin_key_value(store, key, value)` keyed by `(store, key)`.

use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, params};

use super::KeyValueBackend;

pub struct SqliteBackend {
    // One connection behind a mutex: writes are tiny, and SQLite serialises writers anyway.
    connection: Mutex<Connection>,
}

impl SqliteBackend {
    pub fn open(path: &Path) -> Result<Self> {
        let connection = Connection::open(path)
            .with_context(|| format!("cannot open key-value database {}", path.display()))?;
        Self::init(connection)
    }

    pub fn open_in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(connection: Connection) -> Result<Self> {
        // WAL lets tests and tools read the file while the host writes; busy_timeout covers
        // those readers briefly holding locks.
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        connection.execute(
            "CREATE TABLE IF NOT EXISTS spin_key_value (
                store TEXT NOT NULL,
                key   TEXT NOT NULL,
                value BLOB NOT NULL,
                PRIMARY KEY (store, key)
            )",
            [],
        )?;
        Ok(Self { connection: Mutex::new(connection) })
    }
}

impl KeyValueBackend for SqliteBackend {
    fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let conn = self.connection.lock().unwrap();
        let value = conn
            .prepare_cached("SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2")?
            .query_row(params![store, key], |row| row.get(0))
            .optional()?;
        Ok(value)
    }

    fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<()> {
        let conn = self.connection.lock().unwrap();
        conn.prepare_cached(
            "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
        )?
        .execute(params![store, key, value])?;
        Ok(())
    }

    fn delete(&self, store: &str, key: &str) -> Result<()> {
        let conn = self.connection.lock().unwrap();
        conn.prepare_cached("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2")?
            .execute(params![store, key])?;
        Ok(())
    }

    fn exists(&self, store: &str, key: &str) -> Result<bool> {
        let conn = self.connection.lock().unwrap();
        let found = conn
            .prepare_cached("SELECT 1 FROM spin_key_value WHERE store = ?1 AND key = ?2")?
            .exists(params![store, key])?;
        Ok(found)
    }

    fn get_keys(&self, store: &str) -> Result<Vec<String>> {
        let conn = self.connection.lock().unwrap();
        let mut stmt = conn.prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1")?;
        let keys = stmt.query_map(params![store], |row| row.get(0))?.collect::<Result<_, _>>()?;
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_backend_keeps_the_contract() {
        super::super::tests::backend_contract(&SqliteBackend::open_in_memory().unwrap());
    }

    #[test]
    fn data_survives_reopening_the_file() {
        let path = std::env::temp_dir().join(format!("kana-kv-{}.db", std::process::id()));
        SqliteBackend::open(&path).unwrap().set("default", "k", b"v").unwrap();
        let reopened = SqliteBackend::open(&path).unwrap();
        assert_eq!(reopened.get("default", "k").unwrap().as_deref(), Some(&b"v"[..]));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
