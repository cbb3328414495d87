//! spin:key-value through a component, stored in SQLite in Spin's table layout.

use rusqlite::Connection;

use crate::support::{TestHost, core_manifest};

#[test]
fn write_then_read_through_a_component_and_in_sqlite() {
    let mut host = TestHost::start_core(&[]);
    let put = host.put("/debug/kv/greeting", b"hello");
    assert_eq!(put.status, 200, "{}", put.body);
    let got = host.get("/debug/kv/greeting");
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["value"], "hello");

    let db = Connection::open(host.state_dir().join("sqlite_key_value.db")).unwrap();
    let value: Vec<u8> = db
        .query_row("SELECT value FROM spin_key_value WHERE store = 'default' AND key = 'greeting'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(value, b"hello");

    // Survives a hard kill: the write was committed before the response.
    host.restart();
    assert_eq!(host.get("/debug/kv/greeting").json()["value"], "hello");
    assert_eq!(host.delete("/debug/kv/greeting").status, 200);
    assert_eq!(host.get("/debug/kv/greeting").status, 404);
}

#[test]
fn only_declared_stores_open() {
    // `shared` is declared by heartbeat only: debug-routes must get access-denied for it.
    let (dir, manifest) = core_manifest(|text| {
        let marker = "[component.heartbeat]\nsource = \"target/wasm32-wasip2/release/heartbeat.wasm\"\nkey_value_stores = [\"default\"]";
        assert!(text.contains(marker), "spin.toml layout changed; update this test");
        text.replace(marker, &marker.replace("[\"default\"]", "[\"default\", \"shared\"]"))
    });
    let host = TestHost::start_core_with(dir, manifest, &[]);
    assert_eq!(host.get("/debug/open/default").status, 200);
    let denied = host.get("/debug/open/shared");
    assert_eq!(denied.status, 403);
    assert!(denied.json()["error"].as_str().unwrap().contains("AccessDenied"), "{}", denied.body);
    let unknown = host.get("/debug/open/nowhere");
    assert!(unknown.json()["error"].as_str().unwrap().contains("NoSuchStore"), "{}", unknown.body);
}
