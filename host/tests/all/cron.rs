//! Cron trigger: a schedule firing every second leaves a heartbeat in SQLite.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension};

use crate::support::{TestHost, core_manifest, eventually};

#[test]
fn every_second_schedule_writes_heartbeats_to_sqlite() {
    let (dir, manifest) = core_manifest(|text| {
        let heartbeat = "component = \"heartbeat\"\ncron_expression = \"*/10 * * * * *\"";
        assert!(text.contains(heartbeat), "spin.toml's heartbeat trigger changed; update this test");
        text.replace(heartbeat, "component = \"heartbeat\"\ncron_expression = \"* * * * * *\"")
    });
    let host = TestHost::start_core_with(dir, manifest, &[]);
    let db = Connection::open(host.state_dir().join("sqlite_key_value.db")).unwrap();
    let read = || -> Option<serde_json::Value> {
        let bytes: Option<Vec<u8>> = db
            .query_row("SELECT value FROM spin_key_value WHERE store = 'default' AND key = 'heartbeat'", [], |r| r.get(0))
            .optional()
            .ok()
            .flatten();
        bytes.map(|b| serde_json::from_slice(&b).unwrap())
    };
    let beat = eventually(Duration::from_secs(15), "two heartbeats", || read().filter(|b| b["count"].as_u64() >= Some(2)));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let stamp = beat["timestamp"].as_u64().unwrap();
    assert!(stamp <= now && now - stamp < 30, "timestamp {stamp} vs now {now}");

    // /health reports the heartbeat through the health component's own key-value access.
    let health = host.get("/health").json();
    assert!(health["heartbeat"]["count"].as_u64().unwrap() >= 2, "{health}");
}
