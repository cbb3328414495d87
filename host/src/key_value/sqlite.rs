//! SQLite [`KeyValueBackend`] in Spin's layout, so `spin up` and this host share `.spin/` data:
//! one table `spin_key_value(store, key, value)` keyed by `(store, key)`.

use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, params};

use super::KeyValueBackend;

pub struct SqliteBackend {
    // Writes are tiny and SQLite serialises writers anyway: one connection behind a mutex.
    writer: Mutex<Connection>,
    // Reads on their own connection: in WAL mode they never wait for a writer, so a write lock
    // held elsewhere (another process, a stuck transaction) cannot stall reads such as /health.
    reader: Mutex<Connection>,
}

/// How long a write waits for a lock held elsewhere: SQLite retries with backoff meanwhile.
/// Past it the guest gets an error (the jobs component answers 503 + Retry-After).
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

impl SqliteBackend {
    pub fn open(path: &Path) -> Result<Self> {
        let open = || -> Result<Connection> {
            let conn = Connection::open(path).with_context(|| format!("cannot open key-value database {}", path.display()))?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            Ok(conn)
        };
        let writer = open()?;
        Self::create_table(&writer)?;
        Ok(Self { writer: Mutex::new(writer), reader: Mutex::new(open()?) })
    }

    /// One shared in-memory database (a named shared-cache URI), for tests.
    #[cfg(test)]
    pub fn open_in_memory() -> Result<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let uri = format!("file:kana-kv-{}-{n}?mode=memory&cache=shared", std::process::id());
        let flags = rusqlite::OpenFlags::default() | rusqlite::OpenFlags::SQLITE_OPEN_URI;
        let writer = Connection::open_with_flags(&uri, flags)?;
        writer.busy_timeout(BUSY_TIMEOUT)?;
        Self::create_table(&writer)?;
        Ok(Self { writer: Mutex::new(writer), reader: Mutex::new(Connection::open_with_flags(&uri, flags)?) })
    }

    fn create_table(connection: &Connection) -> Result<()> {
        // WAL lets tests and tools read the file while the host writes.
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.execute(
            "CREATE TABLE IF NOT EXISTS spin_key_value (
                store TEXT NOT NULL,
                key   TEXT NOT NULL,
                value BLOB NOT NULL,
                PRIMARY KEY (store, key)
            )",
            [],
        )?;
        Ok(())
    }

    fn read(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether an error from this backend means the disk or database is full.
pub fn is_full(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(cause.downcast_ref::<rusqlite::Error>(), Some(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DiskFull)
    })
}

impl KeyValueBackend for SqliteBackend {
    fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let conn = self.read();
        let value = conn
            .prepare_cached("SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2")?
            .query_row(params![store, key], |row| row.get(0))
            .optional()?;
        Ok(value)
    }

    fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<()> {
        let conn = self.write();
        conn.prepare_cached(
            "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
        )?
        .execute(params![store, key, value])?;
        Ok(())
    }

    fn delete(&self, store: &str, key: &str) -> Result<()> {
        let conn = self.write();
        conn.prepare_cached("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2")?
            .execute(params![store, key])?;
        Ok(())
    }

    fn exists(&self, store: &str, key: &str) -> Result<bool> {
        let conn = self.read();
        let found = conn
            .prepare_cached("SELECT 1 FROM spin_key_value WHERE store = ?1 AND key = ?2")?
            .exists(params![store, key])?;
        Ok(found)
    }

    fn get_keys(&self, store: &str) -> Result<Vec<String>> {
        let conn = self.read();
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

    fn temp_db(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("kana-kv-{tag}-{}.db", std::process::id()))
    }

    fn remove_db(path: &Path) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    #[test]
    fn reads_go_on_while_another_process_holds_the_write_lock() {
        let path = temp_db("locked");
        let backend = SqliteBackend::open(&path).unwrap();
        backend.set("default", "k", b"v").unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE; INSERT INTO spin_key_value VALUES ('default', 'x', x'00');").unwrap();
        let started = std::time::Instant::now();
        assert_eq!(backend.get("default", "k").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(backend.get_keys("default").unwrap(), ["k"]);
        assert!(started.elapsed() < BUSY_TIMEOUT / 2, "reads waited {:?}", started.elapsed());
        other.execute_batch("COMMIT").unwrap();
        backend.set("default", "k2", b"v2").unwrap();
        remove_db(&path);
    }

    #[test]
    fn a_full_database_is_told_apart_from_other_failures() {
        let path = temp_db("full");
        let backend = SqliteBackend::open(&path).unwrap();
        backend.write().pragma_update(None, "max_page_count", 8).unwrap();
        let err = (0..64).find_map(|i| backend.set("default", &format!("k{i}"), &[0u8; 4096]).err()).expect("fills up");
        assert!(is_full(&err), "{err:#}");
        assert!(!is_full(&anyhow::anyhow!("something else")));
        remove_db(&path);
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
