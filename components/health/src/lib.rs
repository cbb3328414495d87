//! Health component: `GET /health` (status + last cron heartbeat from key-value) and `GET /version`;
//! anything else under its routes answers 404 JSON. It ships, so it serves nothing else: the
//! host integration tests drive their debug routes through the test-only `debug-routes`
//! component (components/debug-routes), which spin.toml never lists.

use serde_json::json;
use spin_sdk::http::{IntoResponse, Json, Method, Request, StatusCode};
use spin_sdk::key_value::Store;

/// Key under which the heartbeat component stores its last tick (JSON).
const HEARTBEAT_KEY: &str = "heartbeat";

#[spin_sdk::http_service]
async fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let path = req.uri().path();
    let reply = match (req.method(), path.trim_matches('/')) {
        (&Method::GET, "health") => health().await?,
        (&Method::GET, "version") => version().await,
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

/// Key the health check writes: readiness means the store takes writes, not just reads.
const PROBE_KEY: &str = "health/probe";

/// 200 `ok` when the store reads and writes; 503 `degraded` (with the store's error) when it
/// does not, e.g. a full disk or a write lock held elsewhere, so load balancers stop sending
/// work that would fail.
async fn health() -> anyhow::Result<Reply> {
    let store = match Store::open_default().await {
        Ok(store) => store,
        Err(e) => return Ok(degraded(format!("cannot open the key-value store: {e:?}"), serde_json::Value::Null)),
    };
    let heartbeat = match store.get(HEARTBEAT_KEY).await {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        Ok(None) => serde_json::Value::Null,
        Err(e) => return Ok(degraded(format!("the key-value store cannot be read: {e:?}"), serde_json::Value::Null)),
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    if let Err(e) = store.set(PROBE_KEY, now.as_millis().to_string().as_bytes()).await {
        return Ok(degraded(format!("the key-value store refuses writes: {e:?}"), heartbeat));
    }
    Ok(ok(json!({ "status": "ok", "heartbeat": heartbeat })))
}

fn degraded(store_error: String, heartbeat: serde_json::Value) -> Reply {
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "degraded", "store": store_error, "heartbeat": heartbeat })))
}

async fn version() -> Reply {
    // A missing variable is not an error for /version: it only reports what it knows.
    let deployment = spin_sdk::variables::get("deployment").await.ok();
    ok(json!({
        "name": env!("CARGO_PKG_NAME"),
        "version": env!("CARGO_PKG_VERSION"),
        "build": {
            "target": "wasm32-wasip2",
            "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        },
        "deployment": deployment,
    }))
}
