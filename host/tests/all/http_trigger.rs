//! HTTP trigger: routing, Spin headers, errors, limits, instance reuse, background tasks.

use std::time::Duration;

use crate::support::{Options, TestHost, core_manifest, eventually};

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
    let reply = host.get("/health/debug/headers/a/b?x=1");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let json = reply.json();
    let headers = &json["headers"];
    assert_eq!(headers["spin-matched-route"], "/health/...");
    assert_eq!(headers["spin-raw-component-route"], "/health/...");
    assert_eq!(headers["spin-component-route"], "/health");
    assert_eq!(headers["spin-path-info"], "/debug/headers/a/b");
    assert_eq!(headers["spin-base-path"], "/");
    assert_eq!(headers["spin-full-url"], host.url("/health/debug/headers/a/b?x=1"));
    assert!(headers["spin-client-addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(json["uri"], host.url("/health/debug/headers/a/b?x=1"));
}

#[test]
fn oversized_body_is_413_and_the_host_keeps_serving() {
    let host = TestHost::start_core(&["--max-body-bytes", "1024"]);
    let reply = host.post("/health/debug/echo-size", &[7u8; 1024]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["bytes"], 1024);

    let reply = host.post("/health/debug/echo-size", &[7u8; 1025]);
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json()["max_body_bytes"], 1024);
    assert_eq!(host.get("/health").status, 200);
}

#[test]
fn a_trap_fails_only_its_own_request() {
    let host = TestHost::start_core(&[]);
    let trapped = host.get("/health/debug/trap");
    assert_eq!(trapped.status, 500);
    assert!(trapped.json()["error"].is_string());
    let next = host.get("/health");
    assert_eq!(next.status, 200, "{}", next.body);
    assert_eq!(host.get("/health/debug/trap").status, 500);
    assert_eq!(host.get("/version").status, 200);
}

#[test]
fn instances_are_reused_so_guest_globals_survive() {
    let host = TestHost::start_core(&["--instances", "1"]);
    let seen = |host: &TestHost| host.get("/health/debug/counter").json()["requests_seen"].as_u64().unwrap();
    let first = seen(&host);
    let second = seen(&host);
    assert_eq!(second, first + 1, "the same instance answered both requests");

    // A trap recycles the instance: the counter starts again.
    assert_eq!(host.get("/health/debug/trap").status, 500);
    assert_eq!(seen(&host), 1);
}

#[test]
fn instances_are_recycled_after_max_requests() {
    let host = TestHost::start_core(&["--instances", "1", "--max-requests-per-instance", "3"]);
    let counts: Vec<u64> =
        (0..5).map(|_| host.get("/health/debug/counter").json()["requests_seen"].as_u64().unwrap()).collect();
    assert_eq!(counts, [1, 2, 3, 1, 2]);
}

#[test]
fn guest_tasks_keep_running_after_the_response() {
    let host = TestHost::start_core(&[]);
    assert_eq!(host.get("/health/debug/kv/late").status, 404);
    let reply = host.post("/health/debug/spawn/late", b"");
    assert_eq!(reply.status, 202, "{}", reply.body);
    let value = eventually(Duration::from_secs(10), "the spawned task's write", || {
        let reply = host.get("/health/debug/kv/late");
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
