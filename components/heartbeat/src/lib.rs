//! Heartbeat cron component: on every tick stores `{"timestamp": <unix s>, "count": n}` under the
//! key `heartbeat` in the `default` key-value store, so `/health` can show the scheduler is alive.

use spin_sdk::key_value::Store;

// Generates `Guest`, `Metadata`, `Error` and `export!` for the `spin-cron` world, from the one copy
// of its WIT, which kana-host's cron trigger reads too.
spin_sdk::wit_bindgen::generate!({
    world: "spin-cron",
    path: "../../host/wit/deps/spin-cron@3.0.0",
    runtime_path: "spin_sdk::wit_bindgen::rt",
});


const HEARTBEAT_KEY: &str = "heartbeat";

#[derive(serde::Serialize, serde::Deserialize)]
struct Heartbeat {
    timestamp: u64,
    count: u64,
}

struct Component;

impl Guest for Component {
    async fn handle_cron_event(metadata: Metadata) -> Result<(), Error> {
        let fail = |e: &dyn std::fmt::Display| Error::Other(e.to_string());
        let store = Store::open_default().await.map_err(|e| fail(&e))?;
        // The count survives restarts because it lives in the store, not in the instance.
        let previous = store.get(HEARTBEAT_KEY).await.map_err(|e| fail(&e))?;
        let count = previous
            .and_then(|bytes| serde_json::from_slice::<Heartbeat>(&bytes).ok())
            .map_or(0, |h| h.count);
        let beat = Heartbeat { timestamp: metadata.timestamp, count: count + 1 };
        let bytes = serde_json::to_vec(&beat).map_err(|e| fail(&e))?;
        store.set(HEARTBEAT_KEY, bytes).await.map_err(|e| fail(&e))?;
        Ok(())
    }
}

export!(Component);
