//! `web/openapi.json` against the real answers: two hosts on the shipped spin.toml and `models/`
//! (one as shipped, one with the operator switches on: task listing, the tick token, a one-job
//! queue and a small jobs upload limit) get a request for every documented route, its success and
//! its main errors; each answer's status must be documented for its operation, its documented
//! headers present and its JSON body valid against the documented schema (JSON Schema 2020-12,
//! which OpenAPI 3.1 schemas are). Every route of spin.toml must have a documented path, so a new
//! route without docs fails here; the document and its page are served by static-files.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use kana_inference::testing::{fixture, multipart_body};
use serde_json::{Value, json};

use crate::support::{Options, Reply, TestHost, eventually, repo_root, shipped_manifest};

/// A task id of the right shape that no store holds.
const NO_SUCH_TASK: &str = "20240101_000000_aaaaaaaaaaaaaaaaaaaaaaaaa";

/// The document, and the statuses the test saw per operation (to report what it covered).
struct Spec {
    doc: Value,
    seen: std::cell::RefCell<BTreeSet<String>>,
}

impl Spec {
    fn load() -> Spec {
        let text = std::fs::read_to_string(repo_root().join("web/openapi.json")).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("web/openapi.json is not JSON: {e}"));
        assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.1")), Some(true), "an OpenAPI 3.1 document");
        Spec { doc, seen: Default::default() }
    }

    /// `{"$ref": "#/..."}` → what it names (once; the document's refs are one level deep).
    fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) => self
                .doc
                .pointer(reference.strip_prefix('#').unwrap_or_else(|| panic!("{reference}: only local refs")))
                .unwrap_or_else(|| panic!("{reference} names nothing in the document")),
            None => value,
        }
    }

    /// A validator for a schema of the document: its `#/components/schemas/...` refs resolve
    /// against a root that holds the document's components.
    fn validator(&self, schema: &Value) -> jsonschema::Validator {
        let mut root = schema.clone();
        root.as_object_mut().expect("a schema object").insert("components".into(), self.doc["components"].clone());
        jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("schema {schema} does not compile: {e}"))
    }

    /// The documented response of `method` on `template` for `reply.status`; a method the path
    /// does not document may answer with what another of its operations documents for that
    /// status (405, or /predict's 404 `no_route`).
    fn response(&self, method: &str, template: &str, status: u16) -> &Value {
        let item = self.doc["paths"].get(template).unwrap_or_else(|| panic!("{template} is not a documented path"));
        let status = status.to_string();
        let documented = |op: &Value| op["responses"].get(&status).is_some();
        let op = match item.get(method.to_ascii_lowercase()) {
            Some(op) => op,
            None => item.as_object().unwrap().values().find(|op| documented(op)).unwrap_or_else(|| {
                panic!("{method} {template}: the method is not documented, nor status {status} for another")
            }),
        };
        let response = op["responses"]
            .get(&status)
            .unwrap_or_else(|| panic!("{method} {template}: status {status} is not documented"));
        self.resolve(response)
    }

    /// Checks one real answer against the document.
    fn check(&self, method: &str, template: &str, reply: &Reply) {
        let what = format!("{method} {template} → {}", reply.status);
        let response = self.response(method, template, reply.status);
        for (name, header) in response["headers"].as_object().into_iter().flatten() {
            if self.resolve(header)["required"] == json!(true) {
                assert!(reply.header(name).is_some(), "{what}: documented header {name} missing: {:?}", reply.headers);
            }
        }
        if let Some(content) = response["content"].as_object() {
            // The answer's media type must be one documented for it (JSON, or a contact sheet's PNG).
            let content_type = reply.header("content-type").unwrap_or_default();
            let essence = content_type.split(';').next().unwrap_or_default().trim();
            assert!(content.contains_key(essence), "{what}: content type {content_type:?}, documented {:?}", content.keys());
        }
        if let Some(media) = response["content"].get("application/json").filter(|_| reply.header("content-type").is_some_and(|t| t.starts_with("application/json"))) {
            let body: Value = serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", reply.body));
            let validator = self.validator(&media["schema"]);
            let errors: Vec<String> = validator.iter_errors(&body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
            assert!(errors.is_empty(), "{what}: the body does not match the documented schema:\n{}\nbody: {}", errors.join("\n"), reply.body);
        }
        self.seen.borrow_mut().insert(format!("{method} {template} {}", reply.status));
    }
}

/// Requests with any method and headers, statuses as answers (not errors).
struct Client {
    agent: ureq::Agent,
}

impl Client {
    fn new() -> Client {
        let config = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(120)));
        Client { agent: config.build().into() }
    }

    fn send(&self, host: &TestHost, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut request = http::Request::builder().method(method).uri(host.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let result = if body.is_empty() {
            self.agent.run(request.body(()).unwrap())
        } else {
            self.agent.run(request.body(body.to_vec()).unwrap())
        };
        let mut response = result.unwrap_or_else(|e| panic!("{method} {path}: {e}\nhost log:\n{}", host.logs()));
        let headers = response.headers().iter().map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned())).collect();
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        Reply { status, headers, body }
    }
}

/// A POST that only declares a body over kana-host's `--max-body-bytes` (and sends none): the host
/// answers 413 from the Content-Length, and no client is cut off mid-upload.
fn declared_too_large(host: &TestHost, path: &str, bytes: usize) -> Reply {
    let mut stream = TcpStream::connect(host.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/x-npz\r\nContent-Length: {bytes}\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("POST {path}: no response: {text:?}"));
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned())).collect();
    Reply { status, headers, body: body.to_owned() }
}

fn npz_upload(file: &str) -> (String, Vec<u8>) {
    multipart_body("upload_file", file, "application/x-npz", &fixture(&format!("k49/{file}")))
}

/// `execute_at` `seconds` from now, percent-encoded for a query.
fn at(seconds: i64) -> String {
    (Utc::now() + chrono::Duration::seconds(seconds)).to_rfc3339_opts(SecondsFormat::Secs, true).replace(':', "%3A")
}

/// 28 rows of 28 ints: the JSON body the drawing page sends.
fn drawn_pixels() -> Vec<u8> {
    let rows: Vec<Vec<u8>> = (0..28).map(|y| (0..28).map(|x| if (8..20).contains(&x) && (12..16).contains(&y) { 255 } else { 0 }).collect()).collect();
    serde_json::to_vec(&rows).unwrap()
}

#[test]
fn every_spin_route_is_documented_and_every_ref_resolves() {
    let spec = Spec::load();
    let paths: Vec<&String> = spec.doc["paths"].as_object().unwrap().keys().collect();
    let manifest: toml::Table = toml::from_str(&std::fs::read_to_string(repo_root().join("spin.toml")).unwrap()).unwrap();
    let routes: Vec<String> = manifest["trigger"]["http"].as_array().unwrap().iter().map(|t| t["route"].as_str().unwrap().to_owned()).collect();
    for route in &routes {
        // `/tasks/...` → `/tasks`, `/async_predict/:model` → `/async_predict/{model}`.
        let prefix: String = route.trim_end_matches("/...").split('/').map(|s| match s.strip_prefix(':') {
            Some(name) => format!("{{{name}}}"),
            None => s.to_owned(),
        }).collect::<Vec<_>>().join("/");
        if prefix.is_empty() {
            // The catch-all: static files; the document names the one that is API.
            assert!(paths.iter().any(|p| *p == "/openapi.json"), "/openapi.json is not documented");
            continue;
        }
        let covered = paths.iter().any(|p| **p == prefix || p.starts_with(&format!("{prefix}/")));
        assert!(covered, "spin.toml route {route} has no path in web/openapi.json (documented: {paths:?})");
    }
    // And the other way: every documented path is routed to its own component.
    for path in &paths {
        let routed = routes.iter().filter(|r| *r != "/...").any(|route| {
            let prefix: Vec<&str> = route.trim_end_matches("/...").split('/').collect();
            let segments: Vec<&str> = path.split('/').collect();
            let wildcard = route.ends_with("/...");
            (segments.len() == prefix.len() || wildcard && segments.len() > prefix.len())
                && prefix.iter().zip(&segments).all(|(r, s)| r == s || r.starts_with(':') && s.starts_with('{'))
        });
        assert!(routed || *path == "/openapi.json", "documented path {path} is not a route of spin.toml");
    }

    // Every $ref names something, every schema is valid JSON Schema, every response schema compiles.
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => map.iter().for_each(|(k, v)| match (k.as_str(), v) {
                ("$ref", Value::String(r)) => out.push(r),
                _ => refs(v, out),
            }),
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&spec.doc, &mut all);
    assert!(all.len() > 20, "{all:?}");
    for reference in all {
        assert!(spec.doc.pointer(reference.trim_start_matches('#')).is_some(), "{reference} names nothing");
    }
    for (name, schema) in spec.doc["components"]["schemas"].as_object().unwrap() {
        if let Err(e) = jsonschema::meta::validate(schema) {
            panic!("components.schemas.{name} is not a valid JSON Schema: {e}");
        }
        spec.validator(schema);
    }
    for (path, item) in spec.doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(op["summary"].is_string(), "{method} {path} has no summary");
            for (status, response) in op["responses"].as_object().unwrap() {
                assert!(status.parse::<u16>().is_ok(), "{method} {path}: status {status}");
                let response = spec.resolve(response);
                assert!(response["description"].is_string(), "{method} {path} {status}: no description");
                if let Some(media) = response["content"].get("application/json") {
                    spec.validator(&media["schema"]);
                }
            }
        }
    }
}

#[test]
fn every_documented_route_answers_as_documented() {
    let spec = Spec::load();
    let client = Client::new();
    let (_dir, manifest) = shipped_manifest(|text| text);
    let host = TestHost::start_with(Options { manifest: Some(manifest), ..Default::default() });
    let send = |method: &str, template: &str, path: &str, headers: &[(&str, &str)], body: &[u8]| {
        let reply = client.send(&host, method, path, headers, body);
        spec.check(method, template, &reply);
        reply
    };
    let expect = |reply: &Reply, status: u16, kind: Option<&str>| {
        assert_eq!(reply.status, status, "{}", reply.body);
        if let Some(kind) = kind {
            assert_eq!(reply.json()["kind"].as_str(), Some(kind), "{}", reply.body);
        }
    };

    // The document and its page, from static-files.
    let served = host.get("/openapi.json");
    assert_eq!(served.status, 200, "{}", served.body);
    assert_eq!(served.header("content-type"), Some("application/json"));
    assert_eq!(served.json(), spec.doc, "GET /openapi.json serves web/openapi.json");
    spec.check("GET", "/openapi.json", &served);
    expect(&send("POST", "/openapi.json", "/openapi.json", &[], b"x"), 405, None);
    let page = host.get("/docs");
    assert_eq!((page.status, page.header("content-type")), (200, Some("text/html; charset=utf-8")), "{}", page.body);
    assert_eq!(host.get("/docs.html").body, page.body, "/docs is docs.html");
    assert!(page.body.contains("docs.js"), "{}", page.body);
    let script = host.get("/docs.js");
    assert_eq!((script.status, script.header("content-type")), (200, Some("text/javascript; charset=utf-8")));
    assert!(script.body.contains("openapi.json"), "docs.js renders /openapi.json");
    assert!(!page.body.contains("://") && !script.body.contains("://"), "self-contained: no CDN");

    // health
    expect(&send("GET", "/health", "/health", &[], b""), 200, None);
    expect(&send("GET", "/version", "/version", &[], b""), 200, None);

    // models
    let models = send("GET", "/models", "/models", &[], b"");
    expect(&models, 200, None);
    assert!(models.json()["models"].as_array().is_some_and(|m| m.len() >= 2), "{}", models.body);
    expect(&send("GET", "/models/{name}", "/models/cnn", &[], b""), 200, None);
    expect(&send("GET", "/models/{name}", "/models/fashion-mnist-cnn", &[], b""), 200, None);
    expect(&send("GET", "/models/{name}", "/models/no-such-model", &[], b""), 404, Some("unknown_model"));

    // predict: every body kind, then the errors.
    let predict = |path: &str, content_type: &str, body: &[u8]| send("POST", "/predict/{model}", path, &[("content-type", content_type)], body);
    let (ct, body) = npz_upload("test_images_10.npz");
    let ok = predict("/predict/cnn", &ct, &body);
    expect(&ok, 200, None);
    assert_eq!(ok.json()["count"], json!(10));
    let ok = predict("/predict/densenet?top_k=3", "application/x-npz", &fixture("k49/test_images_10.npz"));
    expect(&ok, 200, None);
    assert_eq!(ok.json()["results"][0]["top_k"].as_array().map(Vec::len), Some(3), "{}", ok.body);
    expect(&predict("/predict/cnn", "image/png", &fixture("samples/k49_1_paper.png")), 200, None);
    expect(&predict("/predict/cnn", "image/jpeg", &fixture("samples/k49_1_paper.jpg")), 200, None);
    expect(&predict("/predict/cnn", "application/json", &drawn_pixels()), 200, None);
    expect(&predict("/predict/no-such-model", &ct, &body), 404, Some("unknown_model"));
    expect(&predict("/predict/cnn", "text/plain", b"hello"), 415, Some("unsupported_media_type"));
    expect(&predict("/predict/cnn", "application/json", b"[[1, 2, 3]]"), 422, None);
    expect(&predict("/predict/cnn", "application/x-npz", b""), 422, Some("empty_body"));
    expect(&predict("/predict/cnn", "application/x-npz", b"not an npz"), 422, Some("malformed_input"));
    expect(&predict("/predict/cnn?top_k=0", &ct, &body), 400, Some("bad_query"));
    let sheet = predict("/predict/cnn?format=png", &ct, &body);
    assert_eq!((sheet.status, sheet.header("content-type")), (200, Some("image/png")));
    expect(&predict("/predict/cnn?format=gif", &ct, &body), 400, Some("bad_query"));
    expect(&predict("/predict/cnn", "application/x-npz", &vec![0; 5 << 20]), 413, Some("body_too_large"));
    let host_limit = declared_too_large(&host, "/predict/cnn", 17 << 20);
    spec.check("POST", "/predict/{model}", &host_limit);
    expect(&host_limit, 413, None);
    assert!(host_limit.json()["max_body_bytes"].is_u64(), "kana-host's own 413: {}", host_limit.body);
    expect(&send("GET", "/predict/{model}", "/predict/cnn", &[], b""), 404, Some("no_route"));

    // async jobs: 202, polled to done, results; then the errors.
    let submitted = send("POST", "/async_predict/{model}", "/async_predict/cnn", &[("content-type", &ct)], &body);
    expect(&submitted, 202, None);
    let id = submitted.json()["task_id"].as_str().unwrap().to_owned();
    assert_eq!(submitted.header("location"), Some(format!("/tasks/{id}").as_str()));
    let done = eventually(Duration::from_secs(60), "the async job to finish", || {
        let task = send("GET", "/tasks/{id}", &format!("/tasks/{id}"), &[], b"");
        expect(&task, 200, None);
        (task.json()["status"] == json!("done")).then_some(task)
    });
    assert_eq!(done.json()["results"].as_array().map(Vec::len), Some(10), "{}", done.body);
    let results = send("GET", "/tasks/{id}/results", &format!("/tasks/{id}/results"), &[], b"");
    expect(&results, 200, None);
    let sheet = send("GET", "/tasks/{id}/sheet.png", &format!("/tasks/{id}/sheet.png"), &[], b"");
    assert_eq!((sheet.status, sheet.header("content-type"), sheet.header("x-sheet-tiles")), (200, Some("image/png"), Some("10")));
    let submit = |path: &str, content_type: &str, body: &[u8]| {
        let template = if path.starts_with("/async") { "/async_predict/{model}" } else { "/schedule/{model}" };
        send("POST", template, path, &[("content-type", content_type)], body)
    };
    expect(&submit("/async_predict/no-such-model", &ct, &body), 404, Some("unknown_model"));
    expect(&submit("/async_predict/cnn", "text/plain", b"hello"), 415, Some("unsupported_media_type"));
    expect(&submit("/async_predict/cnn", "application/json", b"[[1, 2, 3]]"), 422, None);
    expect(&send("GET", "/async_predict/{model}", "/async_predict/cnn", &[], b""), 405, None);

    // scheduled jobs: 202, 409 before they run; execute_at errors.
    let scheduled = submit(&format!("/schedule/cnn?execute_at={}", at(3600)), &ct, &body);
    expect(&scheduled, 202, None);
    let id = scheduled.json()["task_id"].as_str().unwrap().to_owned();
    let pending = send("GET", "/tasks/{id}", &format!("/tasks/{id}"), &[], b"");
    expect(&pending, 200, None);
    assert_eq!(pending.json()["status"], json!("pending"));
    let early = send("GET", "/tasks/{id}/results", &format!("/tasks/{id}/results"), &[], b"");
    expect(&early, 409, None);
    expect(&send("GET", "/tasks/{id}/sheet.png", &format!("/tasks/{id}/sheet.png"), &[], b""), 409, None);
    expect(&submit("/schedule/cnn", &ct, &body), 400, Some("bad_execute_at"));
    expect(&submit("/schedule/cnn?execute_at=tomorrow", &ct, &body), 400, Some("bad_execute_at"));
    expect(&submit(&format!("/schedule/cnn?execute_at={}", at(-86_400)), &ct, &body), 422, Some("bad_execute_at"));
    expect(&submit(&format!("/schedule/cnn?execute_at={}", at(3600)), "application/x-npz", b"not an npz"), 422, Some("malformed_input"));
    expect(&send("GET", "/schedule/{model}", "/schedule/cnn", &[], b""), 405, None);

    // tasks
    expect(&send("GET", "/tasks", "/tasks", &[], b""), 404, Some("listing_disabled"));
    expect(&send("GET", "/tasks/{id}", &format!("/tasks/{NO_SUCH_TASK}"), &[], b""), 404, Some("unknown_task"));
    expect(&send("GET", "/tasks/{id}", "/tasks/not-a-task-id", &[], b""), 404, Some("unknown_task"));
    expect(&send("GET", "/tasks/{id}/results", &format!("/tasks/{NO_SUCH_TASK}/results"), &[], b""), 404, Some("unknown_task"));
    expect(&send("GET", "/tasks/{id}/sheet.png", &format!("/tasks/{NO_SUCH_TASK}/sheet.png"), &[], b""), 404, Some("unknown_task"));
    expect(&send("POST", "/tasks/{id}/sheet.png", &format!("/tasks/{NO_SUCH_TASK}/sheet.png"), &[], b""), 405, None);
    expect(&send("DELETE", "/tasks/{id}", &format!("/tasks/{id}"), &[], b""), 405, None);

    // tick: off without a token.
    expect(&send("POST", "/jobs/tick", "/jobs/tick", &[], b""), 404, Some("tick_disabled"));
    drop(host);

    // The operator switches: listing, the tick token, a one-job queue, a 1 MB jobs upload limit.
    let (_dir, manifest) = shipped_manifest(|text| text);
    let env = [
        ("SPIN_VARIABLE_JOBS_LIST_TASKS", "true"),
        ("SPIN_VARIABLE_JOBS_TICK_TOKEN", "openapi-test-token"),
        ("SPIN_VARIABLE_JOBS_MAX_QUEUED_JOBS", "1"),
        ("SPIN_VARIABLE_JOBS_MAX_INPUT_BYTES", "1000000"),
    ];
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let host = TestHost::start_with(Options { manifest: Some(manifest), env, ..Default::default() });
    let send = |method: &str, template: &str, path: &str, headers: &[(&str, &str)], body: &[u8]| {
        let reply = client.send(&host, method, path, headers, body);
        spec.check(method, template, &reply);
        reply
    };
    let npz = [("content-type", "application/x-npz")];
    let first = send("POST", "/schedule/{model}", &format!("/schedule/cnn?execute_at={}", at(3600)), &npz, &fixture("k49/test_image_0.npz"));
    expect(&first, 202, None);
    let full = send("POST", "/schedule/{model}", &format!("/schedule/cnn?execute_at={}", at(3600)), &npz, &fixture("k49/test_image_0.npz"));
    expect(&full, 429, Some("queue_full"));
    assert_eq!(full.header("retry-after"), Some("30"));
    expect(&send("POST", "/async_predict/{model}", "/async_predict/cnn", &npz, &vec![0; 2_000_000]), 413, Some("body_too_large"));
    let listed = send("GET", "/tasks", "/tasks?limit=10", &[], b"");
    expect(&listed, 200, None);
    assert_eq!(listed.json()["tasks"].as_array().map(Vec::len), Some(1), "{}", listed.body);
    expect(&send("GET", "/tasks", "/tasks?status=pending", &[], b""), 200, None);
    expect(&send("GET", "/tasks", "/tasks?status=lost", &[], b""), 400, None);
    expect(&send("GET", "/tasks", "/tasks?limit=0", &[], b""), 400, None);
    expect(&send("POST", "/jobs/tick", "/jobs/tick", &[], b""), 401, Some("unauthorized"));
    expect(&send("POST", "/jobs/tick", "/jobs/tick", &[("authorization", "Bearer wrong")], b""), 401, Some("unauthorized"));
    let bearer = [("authorization", "Bearer openapi-test-token")];
    let ticked = send("POST", "/jobs/tick", "/jobs/tick", &bearer, b"");
    expect(&ticked, 200, None);
    expect(&send("GET", "/jobs/tick", "/jobs/tick", &bearer, b""), 405, None);

    // Every documented operation was exercised at least once.
    let seen = spec.seen.borrow();
    for (path, item) in spec.doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let prefix = format!("{} {path} ", method.to_ascii_uppercase());
            assert!(seen.iter().any(|s| s.starts_with(&prefix)), "{method} {path} was never requested");
        }
    }
}
