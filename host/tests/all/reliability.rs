//! The reliability suite: what a hostile or broken client, or a runaway guest, can cost the host.
//! Each test asserts the answer, that the cost stops (CPU, memory), and that the host serves on.
//! They run against the small core manifest (health, heartbeat, debug-routes), whose
//! `/debug/spin/:ms` and `/debug/alloc/:mib` routes stand in for a heavy request.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::{TestHost, eventually};

/// Sends raw bytes, then reads until the server closes or `wait` passes; returns what came back.
fn raw_exchange(host: &TestHost, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(host.addr()).unwrap();
    stream.write_all(request).unwrap();
    read_until_closed(&mut stream, wait)
}

fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> String {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    String::from_utf8_lossy(&received).into_owned()
}

/// Waits until the host's CPU use stays flat (< 0.3 s of CPU over 1.5 s).
fn cpu_settles(host: &TestHost, what: &str) {
    eventually(Duration::from_secs(10), what, || {
        let before = host.cpu_seconds();
        std::thread::sleep(Duration::from_millis(1500));
        (host.cpu_seconds() - before < 0.3).then_some(())
    });
}

fn requests_seen(host: &TestHost) -> u64 {
    host.get("/debug/counter").json()["requests_seen"].as_u64().unwrap()
}

#[test]
fn a_guest_computing_for_ever_is_answered_504_on_time_and_stopped() {
    let host = TestHost::start_core(&["--request-timeout-secs", "2", "--instances", "1"]);
    let started = Instant::now();
    let reply = host.get("/debug/spin/forever");
    let took = started.elapsed();
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert!(reply.json()["error"].as_str().unwrap().contains("2 s"), "{}", reply.body);
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(4), "answered after {took:?}");
    cpu_settles(&host, "the runaway guest to be stopped");
    assert_eq!(host.get("/health").status, 200);
    assert_eq!(requests_seen(&host), 1, "a fresh instance replaced the stopped one");
    assert!(host.logs().contains("/debug/spin/forever 504"), "{}", host.logs());
}

#[test]
fn a_request_whose_client_hangs_up_is_stopped_and_logged() {
    let host = TestHost::start_core(&["--request-timeout-secs", "60", "--instances", "1"]);
    let mut stream = TcpStream::connect(host.addr()).unwrap();
    stream.write_all(b"GET /debug/spin/forever HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(stream);
    eventually(Duration::from_secs(10), "the cancellation log line", || {
        host.logs().contains("GET /debug/spin/forever cancelled (client disconnected)").then_some(())
    });
    cpu_settles(&host, "the abandoned guest to be stopped");
    assert!(host.logs().contains("instance dropped to stop an abandoned request"), "{}", host.logs());
    assert_eq!(host.get("/health").status, 200);
}

#[test]
fn memory_past_the_cap_traps_and_past_the_threshold_recycles_the_instance() {
    let host = TestHost::start_core(&[
        "--instances",
        "1",
        "--max-instance-memory-mib",
        "64",
        "--recycle-instance-memory-mib",
        "24",
    ]);
    let refused = host.get("/debug/alloc/100");
    assert_eq!(refused.status, 500, "{}", refused.body);
    assert_eq!(host.get("/health").status, 200);

    let baseline = host.rss_mib();
    for round in 0..8 {
        let kept = host.get("/debug/alloc/30");
        assert_eq!(kept.status, 200, "{}", kept.body);
        assert_eq!(kept.json()["kept_mib"], 30, "round {round}: a fresh instance each time");
    }
    let grown = host.rss_mib().saturating_sub(baseline);
    // 8 × 30 MiB were allocated; recycled instances give theirs back.
    assert!(grown < 80, "RSS grew by {grown} MiB");
    assert!(host.logs().contains("instance recycled after its memory grew"), "{}", host.logs());
}

#[test]
fn a_slow_body_is_cut_off_with_408_json() {
    let host = TestHost::start_core(&["--body-timeout-secs", "1"]);
    let mut stream = TcpStream::connect(host.addr()).unwrap();
    stream.write_all(b"POST /debug/echo-size HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n").unwrap();
    let started = Instant::now();
    // One byte every 200 ms: it would take 20 s.
    stream.set_nonblocking(false).unwrap();
    let mut answer = String::new();
    while started.elapsed() < Duration::from_secs(5) {
        if stream.write_all(b"x").is_err() {
            break;
        }
        stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut buf = [0u8; 4096];
        if let Ok(n) = stream.read(&mut buf)
            && n > 0
        {
            answer = String::from_utf8_lossy(&buf[..n]).into_owned();
            break;
        }
    }
    assert!(answer.starts_with("HTTP/1.1 408"), "after {:?}: {answer:?}", started.elapsed());
    assert!(answer.contains("did not arrive within 1 s"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(host.get("/health").status, 200);
}

#[test]
fn slow_headers_are_cut_off() {
    let host = TestHost::start_core(&["--header-timeout-secs", "1"]);
    let started = Instant::now();
    let answer = raw_exchange(&host, b"GET /health HTTP/1.1\r\nHost: local", Duration::from_secs(5));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "the connection stayed open {took:?}: {answer:?}");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer:?}");
}

#[test]
fn a_connection_flood_waits_in_the_backlog_and_the_host_keeps_serving() {
    let host = TestHost::start_core(&["--max-connections", "4", "--header-timeout-secs", "1"]);
    // Idle connections that never send a request: at most 4 are served at once, each cut off
    // after the header timeout, so the ones queued in the backlog get their turn.
    let idle: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(host.addr()).unwrap()).collect();
    let started = Instant::now();
    let reply = host.get("/health");
    assert_eq!(reply.status, 200);
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    drop(idle);
    assert_eq!(host.get("/health").status, 200);
}

#[test]
fn a_saturated_component_answers_503_with_retry_after() {
    let host = TestHost::start_core(&["--instances", "1", "--max-queued", "1"]);
    let statuses: Vec<(u16, Option<String>)> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..3)
            .map(|i| {
                let host = &host;
                scope.spawn(move || {
                    std::thread::sleep(Duration::from_millis(100 * i));
                    let reply = host.get("/debug/spin/1500");
                    (reply.status, reply.header("retry-after").map(str::to_owned))
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let mut codes: Vec<u16> = statuses.iter().map(|s| s.0).collect();
    codes.sort();
    assert_eq!(codes, [200, 200, 503], "{statuses:?}");
    assert!(statuses.iter().any(|s| s.0 == 503 && s.1.as_deref() == Some("1")), "{statuses:?}");
}

#[test]
fn client_sent_spin_headers_and_host_paths_do_not_reach_the_guest() {
    let host = TestHost::start_core(&[]);
    let answer = raw_exchange(
        &host,
        b"GET /debug/headers/a HTTP/1.1\r\nHost: evil.example/admin?x=\r\nspin-path-info: /forged\r\nspin-evil: 1\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    // Chunked or not, the JSON object is the part between the outer braces.
    let json_text = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
    let json: serde_json::Value = serde_json::from_str(json_text).unwrap();
    let headers = &json["headers"];
    assert_eq!(headers["spin-path-info"], "/headers/a", "{json}");
    assert!(headers.get("spin-evil").is_none(), "{json}");
    let url = headers["spin-full-url"].as_str().unwrap();
    assert_eq!(url, format!("http://{}/debug/headers/a", host.addr()), "{json}");
}

#[test]
fn health_reports_degraded_while_the_store_refuses_writes() {
    let host = TestHost::start_core(&[]);
    assert_eq!(host.get("/health").status, 200);
    // Another process holds the database's write lock (a stuck tool, a backup).
    let other = rusqlite::Connection::open(host.state_dir().join("sqlite_key_value.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE; INSERT INTO spin_key_value VALUES ('default', 'other', x'00');").unwrap();
    let reply = host.get("/health");
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.json()["status"], "degraded");
    assert!(reply.json()["store"].as_str().unwrap().contains("refuses writes"), "{}", reply.body);
    other.execute_batch("COMMIT").unwrap();
    let reply = host.get("/health");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["status"], "ok");
}

#[test]
fn an_idle_instance_is_dropped_and_the_next_request_gets_a_fresh_one() {
    let host = TestHost::start_core(&["--instances", "1", "--instance-idle-secs", "1"]);
    assert_eq!(requests_seen(&host), 1);
    assert_eq!(requests_seen(&host), 2, "reused while busy");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(requests_seen(&host), 1, "the idle instance was dropped");
}
