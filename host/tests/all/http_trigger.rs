//! HTTP trigger: routing, Spin headers, errors, limits, instance reuse, background tasks.

use std::time::Duration;

use crate::support::{Options, TestHost, core_manifest, eventually, shipped_manifest};

/// The repository's whole spin.toml (every component, as `cargo xtask up` serves it).
#[test]
fn health_round_trip() {
    let host = TestHost::start();
    let reply = host.get("/health");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json()["status"], "ok");

    let version = host.get("/version").json();
    assert_eq!(version["name"], "health");
    assert_eq!(version["build"]["profile"], "release");
    assert_eq!(version["deployment"], "local", "the [variables] default");
}

/// What ships serves no debug route: the repository's spin.toml as it is (without the test-only
/// debug-routes component the other tests mount) answers 404 JSON for the old `/health/debug/...`
/// routes and for `/debug/...`.
#[test]
fn the_shipped_manifest_serves_no_debug_routes() {
    let (_dir, manifest) = shipped_manifest(|text| text);
    let doc: toml::Table = toml::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    assert!(!doc["component"].as_table().unwrap().contains_key("debug-routes"), "spin.toml ships debug-routes");
    for trigger in doc["trigger"]["http"].as_array().unwrap() {
        assert!(!trigger["route"].as_str().unwrap().contains("debug"), "spin.toml routes {trigger}");
    }
    let host = TestHost::start_with(Options { manifest: Some(manifest), ..Options::default() });
    let replies = [
        ("GET /health/debug/trap", host.get("/health/debug/trap")),
        ("GET /health/debug/counter", host.get("/health/debug/counter")),
        ("PUT /health/debug/kv/x", host.put("/health/debug/kv/x", b"written by anyone")),
        ("GET /debug/trap", host.get("/debug/trap")),
    ];
    for (request, reply) in replies {
        assert_eq!(reply.status, 404, "{request}: {}", reply.body);
        assert!(reply.json()["error"].is_string(), "{request}: {}", reply.body);
    }
    let health = host.get("/health");
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.json()["status"], "ok");
}

#[test]
fn environment_overrides_variables() {
    let (_dir, manifest) = core_manifest(|text| text);
    let host = TestHost::start_with(Options {
        manifest: Some(manifest),
        env: vec![("SPIN_VARIABLE_DEPLOYMENT".into(), "ci-override".into())],
        ..Options::default()
    });
    assert_eq!(host.get("/version").json()["deployment"], "ci-override");
}

#[test]
fn unknown_route_is_404_json_and_the_request_is_logged() {
    let host = TestHost::start_core(&[]);
    let reply = host.get("/no/such/route");
    assert_eq!(reply.status, 404);
    assert!(reply.json()["error"].as_str().unwrap().contains("/no/such/route"));
    let logs = eventually(Duration::from_secs(5), "a request log line", || {
        let logs = host.logs();
        logs.contains("GET /no/such/route 404").then_some(logs)
    });
    assert!(logs.contains("ms"), "{logs}");
}

#[test]
fn spin_headers_reach_the_component() {
    let host = TestHost::start_core(&[]);
    let reply = host.get("/debug/headers/a/b?x=1");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let json = reply.json();
    let headers = &json["headers"];
    assert_eq!(headers["spin-matched-route"], "/debug/...");
    assert_eq!(headers["spin-raw-component-route"], "/debug/...");
    assert_eq!(headers["spin-component-route"], "/debug");
    assert_eq!(headers["spin-path-info"], "/headers/a/b");
    assert_eq!(headers["spin-base-path"], "/");
    assert_eq!(headers["spin-full-url"], host.url("/debug/headers/a/b?x=1"));
    assert!(headers["spin-client-addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(json["uri"], host.url("/debug/headers/a/b?x=1"));
}

#[test]
fn oversized_body_is_413_and_the_host_keeps_serving() {
    let host = TestHost::start_core(&["--max-body-bytes", "1024"]);
    let reply = host.post("/debug/echo-size", &[7u8; 1024]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["bytes"], 1024);

    let reply = host.post("/debug/echo-size", &[7u8; 1025]);
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json()["max_body_bytes"], 1024);
    assert_eq!(host.get("/health").status, 200);
}

#[test]
fn a_trap_fails_only_its_own_request() {
    let host = TestHost::start_core(&[]);
    let trapped = host.get("/debug/trap");
    assert_eq!(trapped.status, 500);
    assert!(trapped.json()["error"].is_string());
    let next = host.get("/health");
    assert_eq!(next.status, 200, "{}", next.body);
    assert_eq!(host.get("/debug/trap").status, 500);
    assert_eq!(host.get("/version").status, 200);
}

#[test]
fn instances_are_reused_so_guest_globals_survive() {
    let host = TestHost::start_core(&["--instances", "1"]);
    let seen = |host: &TestHost| host.get("/debug/counter").json()["requests_seen"].as_u64().unwrap();
    let first = seen(&host);
    let second = seen(&host);
    assert_eq!(second, first + 1, "the same instance answered both requests");

    // A trap recycles the instance: the counter starts again.
    assert_eq!(host.get("/debug/trap").status, 500);
    assert_eq!(seen(&host), 1);
}

#[test]
fn instances_are_recycled_after_max_requests() {
    let host = TestHost::start_core(&["--instances", "1", "--max-requests-per-instance", "3"]);
    let counts: Vec<u64> =
        (0..5).map(|_| host.get("/debug/counter").json()["requests_seen"].as_u64().unwrap()).collect();
    assert_eq!(counts, [1, 2, 3, 1, 2]);
}

#[test]
fn guest_tasks_keep_running_after_the_response() {
    let host = TestHost::start_core(&[]);
    assert_eq!(host.get("/debug/kv/late").status, 404);
    let reply = host.post("/debug/spawn/late", b"");
    assert_eq!(reply.status, 202, "{}", reply.body);
    let value = eventually(Duration::from_secs(10), "the spawned task's write", || {
        let reply = host.get("/debug/kv/late");
        (reply.status == 200).then(|| reply.json()["value"].as_str().unwrap().to_owned())
    });
    assert_eq!(value, "written after the response");
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let mut host = TestHost::start_core(&[]);
    assert_eq!(host.get("/health").status, 200);
    assert!(host.terminate(), "exit status was not success; log:\n{}", host.logs());
}
