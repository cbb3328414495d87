//! Redis [`KeyValueBackend`] (runtime config `type = "redis"`), so several hosts share one store.
//! Like Spin's Redis store, keys are stored as they are, without the store label: give each
//! label its own server or database (`redis://host:6379/1`) to keep labels apart.
//!
//! One [`ConnectionManager`] per backend: a multiplexed connection that pipelines concurrent
//! commands from every instance and reconnects after a dropped connection.

use anyhow::{Context, Result};
use futures::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, cmd};

use super::{KeyValueBackend, NotAnInteger, StoreFull};

pub struct RedisBackend {
    connection: ConnectionManager,
}

/// Compare-and-swap in one script: Redis runs a script atomically, so no other client's write
/// comes between the comparison and the SET. ARGV[1] is "1" when a current value is expected.
const COMPARE_AND_SWAP: &str = r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3])
return 1
";

impl RedisBackend {
    /// Connects to `url` (`redis://[:password@]host[:port][/db]`, `rediss://` for TLS is not
    /// built in); fails at startup when the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        let client = redis::Client::open(url).with_context(|| format!("invalid Redis url `{url}`"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(5)))
            .set_response_timeout(Some(std::time::Duration::from_secs(5)));
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .with_context(|| format!("cannot connect to Redis at {}", redact(url)))?;
        Ok(Self { connection })
    }
}

/// The url without its password, for messages.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***{}", &url[at..]),
        _ => url.to_owned(),
    }
}

/// Redis's `OOM` (maxmemory reached) becomes [`StoreFull`] (guests get `store-table-full`).
fn classify(error: redis::RedisError) -> anyhow::Error {
    if error.code() == Some("OOM") { StoreFull(error.to_string()).into() } else { anyhow::Error::new(error) }
}

impl KeyValueBackend for RedisBackend {
    fn get<'a>(&'a self, _store: &'a str, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        let mut conn = self.connection.clone();
        Box::pin(async move { cmd("GET").arg(key).query_async(&mut conn).await.map_err(classify) })
    }

    fn set<'a>(&'a self, _store: &'a str, key: &'a str, value: &'a [u8]) -> BoxFuture<'a, Result<()>> {
        let mut conn = self.connection.clone();
        Box::pin(async move { cmd("SET").arg(key).arg(value).query_async(&mut conn).await.map_err(classify) })
    }

    fn delete<'a>(&'a self, _store: &'a str, key: &'a str) -> BoxFuture<'a, Result<()>> {
        let mut conn = self.connection.clone();
        Box::pin(async move { cmd("DEL").arg(key).query_async::<i64>(&mut conn).await.map(drop).map_err(classify) })
    }

    fn exists<'a>(&'a self, _store: &'a str, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        let mut conn = self.connection.clone();
        Box::pin(async move { cmd("EXISTS").arg(key).query_async(&mut conn).await.map_err(classify) })
    }

    fn get_keys<'a>(&'a self, _store: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        let mut conn = self.connection.clone();
        Box::pin(async move {
            // SCAN in pages, not KEYS: the server keeps answering other clients meanwhile. A key
            // may come twice (SCAN's guarantee is at least once).
            let (mut cursor, mut keys) = (0u64, Vec::new());
            loop {
                let (next, page): (u64, Vec<String>) =
                    cmd("SCAN").arg(cursor).arg("COUNT").arg(1000).query_async(&mut conn).await.map_err(classify)?;
                keys.extend(page);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            keys.sort_unstable();
            keys.dedup();
            Ok(keys)
        })
    }

    fn compare_and_swap<'a>(&'a self, _store: &'a str, key: &'a str, current: Option<&'a [u8]>, new: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        let mut conn = self.connection.clone();
        Box::pin(async move {
            let swapped: i64 = Script::new(COMPARE_AND_SWAP)
                .key(key)
                .arg(if current.is_some() { "1" } else { "0" })
                .arg(current.unwrap_or_default())
                .arg(new)
                .invoke_async(&mut conn)
                .await
                .map_err(classify)?;
            Ok(swapped == 1)
        })
    }

    fn increment<'a>(&'a self, _store: &'a str, key: &'a str, delta: i64) -> BoxFuture<'a, Result<i64>> {
        let mut conn = self.connection.clone();
        Box::pin(async move {
            // INCRBY stores the sum as a decimal string, the layout the other backends use.
            cmd("INCRBY").arg(key).arg(delta).query_async(&mut conn).await.map_err(|e| {
                if e.code() == Some("ERR") && e.to_string().contains("not an integer") { NotAnInteger(key.to_owned()).into() } else { classify(e) }
            })
        })
    }
}

/// A `redis-server` on a free loopback port for tests (Debian package `redis-server`, installed
/// by `cargo xtask setup`), without persistence; stopped on drop.
#[cfg(test)]
pub(crate) struct TestRedis {
    child: std::process::Child,
    pub(crate) url: String,
}

#[cfg(test)]
impl TestRedis {
    pub(crate) fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("cannot run redis-server: install it (`cargo xtask setup` or apt-get install redis-server)");
        let url = format!("redis://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "redis-server did not start on port {port}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        TestRedis { child, url }
    }
}

#[cfg(test)]
impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::key_value::tests as contract;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_backend_keeps_the_contract() {
        let redis = TestRedis::start();
        contract::backend_contract(&RedisBackend::connect(&redis.url).await.unwrap()).await;
        // Racers pipelined on one connection: the server still runs each swap on its own.
        let racers = RedisBackend::connect(&redis.url).await.unwrap();
        contract::racing_swaps_lose_no_update(Arc::new(racers)).await;
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_clear_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = RedisBackend::connect(&format!("redis://:secret@127.0.0.1:{port}")).await.err().expect("nobody listens");
        let message = format!("{err:#}");
        assert!(message.contains("cannot connect to Redis at redis://***@127.0.0.1"), "{message}");
        assert!(!message.contains("secret"), "{message}");
        assert!(RedisBackend::connect("http://nope").await.err().is_some());
    }
}
