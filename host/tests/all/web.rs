//! The drawing page as shipped: spin.toml's catch-all `/...` route serves `web/` through the
//! static-files component, never a file outside it, and never shadows the other routes; the
//! JSON pixel request `web/app.js` sends is one `/predict` answers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use kana_inference::testing::fixture;

use crate::support::{Options, Reply, TestHost, eventually, repo_root, shipped_manifest};

/// One request exactly as written (no client-side `..` clean-up), `Connection: close`.
fn raw(host: &TestHost, method: &str, path: &str, extra_headers: &str) -> Reply {
    let mut stream = TcpStream::connect(host.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra_headers}\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{method} {path}: no response: {text:?}"));
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply { status, headers, body: body.to_owned() }
}

/// 28 rows of 28 ints, white ink on black: what app.js's `toPixels` returns for a drawn cross.
fn drawn_pixels() -> Vec<Vec<u8>> {
    (0..28).map(|y| (0..28).map(|x| if (4..24).contains(&x) && (13..16).contains(&y) || (4..24).contains(&y) && (12..15).contains(&x) { 255 } else { 0 }).collect()).collect()
}

#[test]
fn the_drawing_page_is_served_without_escaping_web_or_shadowing_other_routes() {
    let (dir, manifest) = shipped_manifest(|text| text);
    let host = TestHost::start_with(Options { manifest: Some(manifest), ..Default::default() });

    let page = host.get("/");
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    assert!(page.body.contains("<canvas id=\"pad\""), "{}", page.body);
    assert_eq!(host.get("/index.html").body, page.body);
    for (path, ty) in [("/app.js", "text/javascript; charset=utf-8"), ("/style.css", "text/css; charset=utf-8")] {
        let asset = host.get(path);
        assert_eq!(asset.status, 200, "{path}: {}", asset.body);
        assert_eq!(asset.header("content-type"), Some(ty), "{path}");
        assert!(asset.header("cache-control").unwrap().contains("max-age"), "{path}");
        assert_eq!(asset.body, std::fs::read_to_string(repo_root().join("web").join(&path[1..])).unwrap(), "{path}");
    }

    // ETag revalidation and HEAD.
    let etag = page.header("etag").expect("an etag").to_owned();
    let revalidated = raw(&host, "GET", "/", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(revalidated.status, 304, "{}", revalidated.body);
    let head = raw(&host, "HEAD", "/app.js", "");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/javascript; charset=utf-8"));
    assert!(head.body.is_empty(), "{}", head.body);

    let missing = host.get("/nope.js");
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert!(missing.json()["error"].is_string(), "{}", missing.body);
    let post = host.post("/", b"x");
    assert_eq!(post.status, 405, "{}", post.body);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert!(post.json()["error"].is_string(), "{}", post.body);

    // Nothing outside web/, however the path is spelled (sent raw: no client clean-up).
    for path in [
        "/../spin.toml",
        "/%2e%2e/spin.toml",
        "/%2E%2E%2Fspin.toml",
        "/web/..%2fCargo.toml",
        "/..%5cCargo.toml",
        "/..\\Cargo.toml",
        "//etc/passwd",
        "/%2fetc/passwd",
        "/spin.toml",
        "/Cargo.toml",
        "/.git/config",
        "/components/static-files/src/lib.rs",
    ] {
        let reply = raw(&host, "GET", path, "");
        assert!(matches!(reply.status, 400 | 404), "{path}: {} {}", reply.status, reply.body);
        assert!(!reply.body.contains("spin_manifest_version") && !reply.body.contains("[workspace]") && !reply.body.contains("root:"), "{path}: {}", reply.body);
    }

    // The more specific routes still reach their components.
    let health = host.get("/health");
    assert_eq!((health.status, health.json()["status"].as_str()), (200, Some("ok")), "{}", health.body);
    let models = host.get("/models").json();
    assert!(models["models"].as_array().is_some_and(|m| !m.is_empty()), "{models}");

    // The request app.js sends: JSON.stringify([pixels]) to /predict/{model}?top_k=5.
    let body = serde_json::to_vec(&[drawn_pixels()]).unwrap();
    let reply = host.post_as("/predict/cnn?top_k=5", "application/json", &body);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let json: Value = reply.json();
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{json}");
    let top = results[0]["top_k"].as_array().unwrap();
    assert_eq!(top.len(), 5, "{json}");
    let sum: f64 = top.iter().map(|t| t["probability"].as_str().unwrap().parse::<f64>().unwrap()).sum();
    assert!(sum > 0.0 && sum <= 1.0 + 1e-6, "{json}");

    // The upload box posts the file raw with its type, directly and as an async job it polls.
    let npz = fixture("k49/test_images_10.npz");
    let direct = host.post_as("/predict/cnn", "application/x-npz", &npz);
    assert_eq!(direct.status, 200, "{}", direct.body);
    assert_eq!(direct.json()["results"].as_array().map(Vec::len), Some(10), "{}", direct.body);
    let submitted = host.post_as("/async_predict/cnn", "application/x-npz", &npz);
    assert_eq!(submitted.status, 202, "{}", submitted.body);
    let status_url = submitted.json()["status_url"].as_str().unwrap().to_owned();
    let task = eventually(Duration::from_secs(60), "the async job", || {
        let task = host.get(&status_url).json();
        matches!(task["status"].as_str(), Some("done" | "failed")).then_some(task)
    });
    assert_eq!(task["status"], "done", "{task}");
    let results = host.get(&format!("{status_url}/results")).json();
    assert_eq!(results["results"].as_array().map(Vec::len), Some(10), "{results}");
    drop(host);
    drop(dir);
}
