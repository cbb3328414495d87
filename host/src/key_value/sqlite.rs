//! SQLite [`KeyValueBackend`] in Spin's layout, so `spin up` and this host share `.spin/` data:
//! one table `spin_key_value(store, key, value)` keyed by `(store, key)`.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, Result, bail};
use futures::future::BoxFuture;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{KeyValueBackend, StoreFull, incremented};

pub struct SqliteBackend {
    connections: Arc<Connections>,
    /// Held while the backend lives: a second host on the same file is refused at startup.
    _lock: Option<File>,
}

struct Connections {
    // Writes are tiny and SQLite serialises writers anyway: one connection behind a mutex.
    writer: Mutex<Connection>,
    // Reads on their own connection: in WAL mode they never wait for a writer, so a write lock
    // held elsewhere (a tool, a stuck transaction) cannot stall reads such as /health. `None` in
    // memory: there is no WAL, and a second shared-cache connection fails with "table is
    // locked" (busy_timeout does not apply) whenever it reads during a write.
    reader: Option<Mutex<Connection>>,
}

/// How long a write waits for a lock held elsewhere: SQLite retries with backoff meanwhile.
/// Past it the guest gets an error (the jobs component answers 503 + Retry-After).
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

impl SqliteBackend {
    /// Opens (creating) the database file, refusing one another kana-host already uses: its
    /// write lock would make each host's writes wait on the other's, and a shared store across
    /// hosts is what Redis is for.
    pub fn open(path: &Path) -> Result<Self> {
        let lock = lock_exclusively(path)?;
        let open = || -> Result<Connection> {
            let conn = Connection::open(path).with_context(|| format!("cannot open key-value database {}", path.display()))?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            Ok(conn)
        };
        let writer = open()?;
        Self::create_table(&writer)?;
        Ok(Self::from_connections(writer, Some(open()?), Some(lock)))
    }

    /// A fresh database in memory, one connection for reads and writes: tests, and runtime
    /// config `type = "spin"` without a `path`, as in Spin.
    pub fn open_in_memory() -> Result<Self> {
        let connection = Connection::open_in_memory()?;
        Self::create_table(&connection)?;
        Ok(Self::from_connections(connection, None, None))
    }

    fn from_connections(writer: Connection, reader: Option<Connection>, lock: Option<File>) -> Self {
        let connections = Connections { writer: Mutex::new(writer), reader: reader.map(Mutex::new) };
        Self { connections: Arc::new(connections), _lock: lock }
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

    /// Runs `op` on the reader or writer connection on tokio's blocking pool (SQLite blocks).
    fn blocking<T: Send + 'static>(
        &self,
        write: bool,
        op: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFuture<'_, Result<T>> {
        let connections = self.connections.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut conn = if write { connections.write() } else { connections.read() };
                op(&mut conn).map_err(classify)
            })
            .await?
        })
    }

    /// The write connection itself, for tests that change its settings.
    #[cfg(test)]
    fn writer(&self) -> MutexGuard<'_, Connection> {
        self.connections.write()
    }
}

impl Connections {
    fn read(&self) -> MutexGuard<'_, Connection> {
        match &self.reader {
            Some(reader) => reader.lock().unwrap_or_else(|e| e.into_inner()),
            None => self.write(),
        }
    }

    fn write(&self) -> MutexGuard<'_, Connection> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Takes an exclusive `flock` on `<database>.lock` for as long as the returned file is open.
fn lock_exclusively(database: &Path) -> Result<File> {
    let path = database.with_file_name(format!("{}.lock", database.file_name().and_then(|n| n.to_str()).unwrap_or("kv")));
    let file = File::create(&path).with_context(|| format!("cannot create lock file {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is shared.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "{} is in use by another kana-host: a SQLite key-value store serves one host. To share \
             key-value data (and jobs) between hosts, give each the same Redis store with \
             --runtime-config-file (`[key_value_store.default] type = \"redis\"`), or use its own --state-dir",
            database.display()
        );
    }
    Ok(file)
}

/// A full disk or database becomes [`StoreFull`] (guests get `store-table-full`).
fn classify(error: rusqlite::Error) -> anyhow::Error {
    match error {
        rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::DiskFull => StoreFull(error.to_string()).into(),
        other => other.into(),
    }
}

impl KeyValueBackend for SqliteBackend {
    fn get<'a>(&'a self, store: &'a str, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        let (store, key) = (store.to_owned(), key.to_owned());
        self.blocking(false, move |conn| {
            conn.prepare_cached("SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2")?
                .query_row(params![store, key], |row| row.get(0))
                .optional()
        })
    }

    fn set<'a>(&'a self, store: &'a str, key: &'a str, value: &'a [u8]) -> BoxFuture<'a, Result<()>> {
        let (store, key, value) = (store.to_owned(), key.to_owned(), value.to_vec());
        self.blocking(true, move |conn| put(conn, &store, &key, &value))
    }

    fn delete<'a>(&'a self, store: &'a str, key: &'a str) -> BoxFuture<'a, Result<()>> {
        let (store, key) = (store.to_owned(), key.to_owned());
        self.blocking(true, move |conn| {
            conn.prepare_cached("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2")?.execute(params![store, key])?;
            Ok(())
        })
    }

    fn exists<'a>(&'a self, store: &'a str, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        let (store, key) = (store.to_owned(), key.to_owned());
        self.blocking(false, move |conn| {
            conn.prepare_cached("SELECT 1 FROM spin_key_value WHERE store = ?1 AND key = ?2")?.exists(params![store, key])
        })
    }

    fn get_keys<'a>(&'a self, store: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        let store = store.to_owned();
        self.blocking(false, move |conn| {
            let mut stmt = conn.prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1")?;
            stmt.query_map(params![store], |row| row.get(0))?.collect()
        })
    }

    fn compare_and_swap<'a>(&'a self, store: &'a str, key: &'a str, current: Option<&'a [u8]>, new: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        let (store, key, current, new) = (store.to_owned(), key.to_owned(), current.map(<[u8]>::to_vec), new.to_vec());
        // One IMMEDIATE transaction: the read and the write hold the database's write lock, so no
        // other writer (this host or a tool) comes between them.
        self.blocking(true, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if value_of(&tx, &store, &key)? != current {
                return Ok(false);
            }
            put(&tx, &store, &key, &new)?;
            tx.commit()?;
            Ok(true)
        })
    }

    fn increment<'a>(&'a self, store: &'a str, key: &'a str, delta: i64) -> BoxFuture<'a, Result<i64>> {
        let (store, key) = (store.to_owned(), key.to_owned());
        let connections = self.connections.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || -> Result<i64> {
                let mut conn = connections.write();
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(classify)?;
                let sum = incremented(&key, value_of(&tx, &store, &key).map_err(classify)?.as_deref(), delta)?;
                put(&tx, &store, &key, sum.to_string().as_bytes()).map_err(classify)?;
                tx.commit().map_err(classify)?;
                Ok(sum)
            })
            .await?
        })
    }
}

fn value_of(conn: &Connection, store: &str, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2")?
        .query_row(params![store, key], |row| row.get(0))
        .optional()
}

fn put(conn: &Connection, store: &str, key: &str, value: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![store, key, value])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_value::{is_full, tests as contract};

    #[tokio::test]
    async fn sqlite_backend_keeps_the_contract() {
        contract::backend_contract(&SqliteBackend::open_in_memory().unwrap()).await;
        contract::labels_stay_apart(&SqliteBackend::open_in_memory().unwrap()).await;
        contract::racing_swaps_lose_no_update(Arc::new(SqliteBackend::open_in_memory().unwrap())).await;
        // The file database reads on a second connection (WAL): races must not fail there either.
        let path = temp_db("race");
        remove_db(&path);
        contract::racing_swaps_lose_no_update(Arc::new(SqliteBackend::open(&path).unwrap())).await;
        remove_db(&path);
    }

    fn temp_db(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("kana-kv-{tag}-{}.db", std::process::id()))
    }

    fn remove_db(path: &Path) {
        for suffix in ["", "-wal", "-shm", ".lock"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    #[tokio::test]
    async fn reads_go_on_while_another_process_holds_the_write_lock() {
        let path = temp_db("locked");
        let backend = SqliteBackend::open(&path).unwrap();
        backend.set("default", "k", b"v").await.unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE; INSERT INTO spin_key_value VALUES ('default', 'x', x'00');").unwrap();
        let started = std::time::Instant::now();
        assert_eq!(backend.get("default", "k").await.unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(backend.get_keys("default").await.unwrap(), ["k"]);
        assert!(started.elapsed() < BUSY_TIMEOUT / 2, "reads waited {:?}", started.elapsed());
        other.execute_batch("COMMIT").unwrap();
        backend.set("default", "k2", b"v2").await.unwrap();
        remove_db(&path);
    }

    #[tokio::test]
    async fn a_full_database_is_told_apart_from_other_failures() {
        let path = temp_db("full");
        let backend = SqliteBackend::open(&path).unwrap();
        backend.writer().pragma_update(None, "max_page_count", 8).unwrap();
        let mut err = None;
        for i in 0..64 {
            if let Err(e) = backend.set("default", &format!("k{i}"), &[0u8; 4096]).await {
                err = Some(e);
                break;
            }
        }
        let err = err.expect("fills up");
        assert!(is_full(&err), "{err:#}");
        assert!(!is_full(&anyhow::anyhow!("something else")));
        remove_db(&path);
    }

    #[tokio::test]
    async fn data_survives_reopening_the_file() {
        let path = temp_db("reopen");
        SqliteBackend::open(&path).unwrap().set("default", "k", b"v").await.unwrap();
        let reopened = SqliteBackend::open(&path).unwrap();
        assert_eq!(reopened.get("default", "k").await.unwrap().as_deref(), Some(&b"v"[..]));
        remove_db(&path);
    }

    #[test]
    fn a_second_host_on_the_same_file_is_refused_until_the_first_is_gone() {
        let path = temp_db("shared");
        let first = SqliteBackend::open(&path).unwrap();
        let refused = SqliteBackend::open(&path).err().expect("a second opener is refused");
        assert!(format!("{refused:#}").contains("in use by another kana-host"), "{refused:#}");
        drop(first);
        SqliteBackend::open(&path).unwrap();
        remove_db(&path);
    }
}
