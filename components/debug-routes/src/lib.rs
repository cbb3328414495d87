//! Debug routes for the host's integration tests ONLY: this component is never listed in
//! spin.toml, so `cargo xtask up` and real Spin never serve it. The host tests add it to their
//! copy of the manifest (`host/tests/all/support.rs`) under `/debug/...`, because these routes
//! exercise host behaviour no product route isolates cleanly — and they would be dangerous to
//! ship (anyone could trap instances or write any key into the store):
//! - `GET|PUT|DELETE /debug/kv/:key` — key-value round trip through the guest,
//! - `GET /debug/trap` — the guest panics (a trap), the host must answer 500 and go on,
//! - `POST /debug/spawn/:key` — answers 202 at once; a spawned task writes `:key` ~200 ms later,
//! - `GET /debug/counter` — a counter in a guest global, showing instance reuse,
//! - `POST /debug/echo-size` — reads the body and returns its length (body limit tests),
//! - `GET /debug/headers/...` — echoes the `spin-*` request headers the host added,
//! - `GET /debug/open/:label` — tries to open a key-value store, reports the error kind.
//! - `GET /debug/spin/:ms` — computes for `:ms` milliseconds (`forever` never stops), for the
//!   time-limit, cancellation and saturation tests,
//! - `GET /debug/alloc/:mib` — grows the instance's memory by `:mib` MiB and keeps it, for the
//!   memory cap and recycling tests.

use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::BodyExt;
use serde_json::json;
use spin_sdk::http::{IntoResponse, Json, Method, Request, StatusCode};
use spin_sdk::key_value::Store;

/// Lives as long as the instance; the host reuses instances, so it counts across requests.
static REQUESTS_SEEN: AtomicU64 = AtomicU64::new(0);

#[spin_sdk::http_service]
async fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    REQUESTS_SEEN.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    let reply = match (method, segments.as_slice()) {
        (Method::GET, ["debug", "trap"]) => panic!("trap requested by /debug/trap"),
        (Method::GET, ["debug", "counter"]) => ok(json!({ "requests_seen": REQUESTS_SEEN.load(Ordering::Relaxed) })),
        (Method::POST, ["debug", "echo-size"]) => {
            let body = req.into_body().collect().await?.to_bytes();
            ok(json!({ "bytes": body.len() }))
        }
        (Method::POST, ["debug", "spawn", key]) => spawn_late_write(key),
        (Method::GET, ["debug", "headers", ..]) => {
            let spin_headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .filter(|(name, _)| name.as_str().starts_with("spin-"))
                .map(|(name, value)| (name.to_string(), json!(value.to_str().unwrap_or_default())))
                .collect();
            ok(json!({ "uri": req.uri().to_string(), "headers": spin_headers }))
        }
        (Method::GET, ["debug", "spin", ms]) => spin(ms),
        (Method::GET, ["debug", "alloc", mib]) => match mib.parse::<usize>() {
            Ok(mib) => alloc(mib),
            Err(_) => error(StatusCode::BAD_REQUEST, format!("bad MiB count {mib}")),
        },
        (Method::GET, ["debug", "open", label]) => match Store::open(label).await {
            Ok(_) => ok(json!({ "opened": label })),
            Err(e) => error(StatusCode::FORBIDDEN, format!("{e:?}")),
        },
        (method, ["debug", "kv", key]) => {
            let body = req.into_body().collect().await?.to_bytes();
            kv(method, key, &body).await?
        }
        _ => error(StatusCode::NOT_FOUND, format!("no route for {path}")),
    };
    Ok(reply)
}

type Reply = (StatusCode, Json<serde_json::Value>);

fn ok(value: serde_json::Value) -> Reply {
    (StatusCode::OK, Json(value))
}

fn error(status: StatusCode, message: String) -> Reply {
    (status, Json(json!({ "error": message })))
}

async fn kv(method: Method, key: &str, body: &[u8]) -> anyhow::Result<Reply> {
    let store = Store::open_default().await?;
    Ok(match method {
        Method::GET => match store.get(key).await? {
            Some(value) => ok(json!({ "key": key, "value": String::from_utf8_lossy(&value) })),
            None => error(StatusCode::NOT_FOUND, format!("no key {key}")),
        },
        Method::PUT => {
            store.set(key, body).await?;
            ok(json!({ "key": key, "stored_bytes": body.len() }))
        }
        Method::DELETE => {
            store.delete(key).await?;
            ok(json!({ "key": key, "deleted": true }))
        }
        other => error(StatusCode::METHOD_NOT_ALLOWED, format!("{other} not allowed")),
    })
}

/// Busy work that never awaits: only the host's epoch interruption can stop it early.
fn spin(ms: &str) -> Reply {
    let limit = ms.parse::<u64>().ok().map(std::time::Duration::from_millis);
    let started = std::time::Instant::now();
    let mut x = 1u64;
    while limit.is_none_or(|l| started.elapsed() < l) {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    ok(json!({ "spun_ms": started.elapsed().as_millis() as u64, "x": x }))
}

/// Memory the instance keeps: wasm linear memory never shrinks, so this is what a large
/// request leaves behind.
static KEPT: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

fn alloc(mib: usize) -> Reply {
    let block = vec![1u8; mib << 20];
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    kept.push(block);
    let total: usize = kept.iter().map(Vec::len).sum();
    ok(json!({ "kept_mib": total >> 20 }))
}

/// Answer now, keep working afterwards: the WASIp3 task outlives the response.
fn spawn_late_write(key: &str) -> Reply {
    let key = key.to_owned();
    spin_sdk::wasip3::spawn(async move {
        spin_sdk::wasip3::clocks::monotonic_clock::wait_for(200_000_000).await;
        if let Ok(store) = Store::open_default().await {
            let _ = store.set(&key, b"written after the response").await;
        }
    });
    (StatusCode::ACCEPTED, Json(json!({ "scheduled": true })))
}
