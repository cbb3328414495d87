//! What a fresh clone serves: the repository's spin.toml and `models/` folder, driven with the
//! reference server's own curl requests (`/predict/cnn`, `/async_predict/cnn`, `/schedule/cnn`),
//! which must answer with hiragana from the shipped models' aliases.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use kana_inference::testing::{fixture, multipart_body};
use serde_json::Value;

use crate::support::{Options, TestHost, eventually, shipped_manifest};

/// The 49 K49 labels, from the committed class map.
fn hiragana() -> Vec<String> {
    let csv = String::from_utf8(fixture("k49/k49_classmap.csv")).unwrap();
    csv.lines().skip(1).map(|l| l.rsplit(',').next().unwrap().to_owned()).collect()
}

fn upload(file: &str) -> (String, Vec<u8>) {
    multipart_body("upload_file", file, "application/x-npz", &fixture(&format!("k49/{file}")))
}

fn assert_hiragana_results(json: &Value, count: usize) {
    let labels = hiragana();
    let results = json["results"].as_array().unwrap_or_else(|| panic!("no results: {json}"));
    assert_eq!(results.len(), count, "{json}");
    for r in results {
        let label = r["prediction"].as_str().unwrap();
        assert!(labels.iter().any(|l| l == label), "{label:?} is not one of the 49 hiragana");
    }
}

#[test]
fn reference_curls_answer_with_hiragana_on_the_shipped_models() {
    // spin.toml as shipped, except that batch-cron ticks every second instead of every 10 s.
    let (dir, manifest) = shipped_manifest(|text| text.replace("cron_expression = \"*/10 * * * * *\"", "cron_expression = \"* * * * * *\""));
    let host = TestHost::start_with(Options { manifest: Some(manifest), ..Default::default() });

    for (file, count) in [("test_image_0.npz", 1), ("test_images_10.npz", 10), ("test_images_100.npz", 100)] {
        for model in ["cnn", "densenet"] {
            let (ct, body) = upload(file);
            let reply = host.post_as(&format!("/predict/{model}"), &ct, &body);
            assert_eq!(reply.status, 200, "/predict/{model} {file}: {}", reply.body);
            assert_hiragana_results(&reply.json(), count);
        }
    }
    let models = host.get("/models").json();
    let aliases: Vec<&str> = models["models"].as_array().unwrap().iter().flat_map(|m| m["aliases"].as_array().into_iter().flatten()).filter_map(Value::as_str).collect();
    assert!(aliases.contains(&"cnn") && aliases.contains(&"densenet"), "{aliases:?}");
    let (ct, body) = upload("test_image_0.npz");
    let unknown = host.post_as("/predict/resnet", &ct, &body);
    assert_eq!(unknown.status, 404, "{}", unknown.body);

    let (ct, body) = upload("test_images_100.npz");
    let async_reply = host.post_as("/async_predict/cnn", &ct, &body);
    assert_eq!(async_reply.status, 202, "{}", async_reply.body);
    let at = (Utc::now() + chrono::Duration::seconds(2)).to_rfc3339_opts(SecondsFormat::Secs, true).replace(':', "%3A");
    let (ct, body) = upload("test_image_0.npz");
    let scheduled = host.post_as(&format!("/schedule/cnn?execute_at={at}"), &ct, &body);
    assert_eq!(scheduled.status, 202, "{}", scheduled.body);
    for (reply, count) in [(async_reply, 100), (scheduled, 1)] {
        let id = reply.json()["task_id"].as_str().unwrap().to_owned();
        let task = eventually(Duration::from_secs(60), &format!("task {id}"), || {
            let task = host.get(&format!("/tasks/{id}")).json();
            matches!(task["status"].as_str(), Some("done" | "failed")).then_some(task)
        });
        assert_eq!(task["status"], "done", "{task}");
        let results = host.get(&format!("/tasks/{id}/results")).json();
        assert_hiragana_results(&results, count);
    }
    drop(host);
    drop(dir);
}
