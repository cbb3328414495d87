//! `/predict` and `/models` through the real host and the real `predict` component: the reference
//! server's three curl requests, every broken fixture, and wasm output == native output.
//!
//! Models: a reference-size CNN with random weights written by `kana_inference::testing` into a
//! folder under `target/` that replaces the `models` mount in a copy of spin.toml.

use kana_inference::testing::{self, fixture, multipart_body};
use kana_inference::{Model, PredictOptions, predict_request};

use crate::support::{ModelHost, Reply};

struct PredictHost(ModelHost);

impl std::ops::Deref for PredictHost {
    type Target = ModelHost;
    fn deref(&self) -> &ModelHost {
        &self.0
    }
}

impl PredictHost {
    /// Host serving a models folder with the test CNN "cnn" (and `env` vars).
    fn start(tag: &str, env: &[(&str, &str)]) -> PredictHost {
        PredictHost(ModelHost::start(&format!("predict-{tag}"), |text| text, env))
    }

    fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Reply {
        self.0.host.post_as(path, content_type, body)
    }

    fn curl_npz(&self, model: &str, file: &str, query: &str) -> Reply {
        self.0.post_fixture(&format!("/predict/{model}{query}"), file)
    }

    fn native_model(&self) -> Model {
        let (registry, errors) = kana_inference::Registry::load_dir(&self.models);
        assert!(errors.is_empty(), "{errors:?}");
        let model = registry.get("cnn").unwrap();
        Model::load(model.card.clone(), &self.models).unwrap()
    }
}

fn is_timestamp(s: &str) -> bool {
    s.len() == 15 && s.as_bytes()[8] == b'_' && s.chars().enumerate().all(|(i, c)| i == 8 || c.is_ascii_digit())
}

#[test]
fn reference_curl_examples_return_1_10_100_results_with_every_field() {
    let h = PredictHost::start("curl", &[]);
    let classes = testing::k49_classes();
    for (file, count) in [("test_image_0.npz", 1), ("test_images_10.npz", 10), ("test_images_100.npz", 100)] {
        let reply = h.curl_npz("cnn", file, "");
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(reply.header("content-type").unwrap_or_default().starts_with("application/json"));
        let json = reply.json();
        assert_eq!(json["model"], "cnn");
        assert_eq!(json["model_version"], "0.0.0-test");
        let task_id = json["task_id"].as_str().unwrap();
        // The reference's timestamp prefix, then the jobs' random part: /predict and jobs share one scheme.
        assert!(is_timestamp(&task_id[..15]) && kana_inference::task_id::is_valid(task_id), "{task_id}");
        let results = json["results"].as_array().unwrap();
        assert_eq!(results.len(), count);
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r["index"], i);
            assert!(is_timestamp(r["start_timestamp"].as_str().unwrap()));
            let label: usize = r["prediction_label"].as_str().unwrap().parse().unwrap();
            assert_eq!(r["prediction"], classes[label].label.as_str());
            let p: f32 = r["probability"].as_str().unwrap().parse().unwrap();
            assert!(p > 0.0 && p <= 1.0);
        }
        assert!(json["timing_ms"]["total"].as_f64().unwrap() >= 0.0);
    }
    let reply = h.curl_npz("cnn", "test_images_10.npz", "?top_k=5");
    let first = &reply.json()["results"][0];
    assert_eq!(first["top_k"].as_array().unwrap().len(), 5);
    assert_eq!(first["top_k"][0]["prediction_label"], first["prediction_label"]);
}

#[test]
fn models_listing_and_every_bad_input_get_json_errors_while_the_host_keeps_serving() {
    let h = PredictHost::start("bad", &[("SPIN_VARIABLE_PREDICT_MAX_IMAGES", "50")]);
    // Written before the first /predict or /models request, when the component loads the models.
    std::fs::write(h.models.join("broken.card.json"), b"{ not json").unwrap();
    let listing = h.host.get("/models").json();
    assert_eq!(listing["models"].as_array().unwrap().len(), 1);
    assert_eq!(listing["models"][0]["name"], "cnn");
    let invalid = &listing["invalid"][0];
    assert!(invalid["path"].as_str().unwrap().ends_with("broken.card.json"), "{listing}");
    assert!(invalid["message"].as_str().unwrap().contains("invalid card JSON"), "{listing}");
    assert!(h.host.logs().contains("predict: not serving"), "{}", h.host.logs());
    assert_eq!(listing["models"][0]["classes"].as_array().unwrap().len(), 49);
    let card = h.host.get("/models/cnn").json();
    assert_eq!((card["served_from"].as_str(), card["version"].as_str()), (Some("onnx"), Some("0.0.0-test")));
    assert_eq!(card["classes"][0]["label"], "あ");
    assert_eq!(card["input"]["shape"], serde_json::json!([1, 28, 28]));
    assert_eq!(h.host.get("/models/nope").status, 404);

    let npz = "application/x-npz";
    let ten_mb = vec![0x5au8; 10 * 1024 * 1024];
    let cases: Vec<(String, String, Vec<u8>, u16)> = vec![
        ("/predict/nope".into(), npz.into(), fixture("k49/test_image_0.npz"), 404),
        ("/predict/cnn".into(), npz.into(), fixture("broken/truncated.npz"), 422),
        ("/predict/cnn".into(), npz.into(), fixture("broken/wrong_dtype.npz"), 422),
        ("/predict/cnn".into(), npz.into(), fixture("broken/wrong_shape.npz"), 422),
        ("/predict/cnn".into(), npz.into(), fixture("broken/text.npz"), 422),
        ("/predict/cnn".into(), "text/plain".into(), fixture("broken/text.npz"), 415),
        ("/predict/cnn".into(), npz.into(), Vec::new(), 422),
        ("/predict/cnn".into(), "image/png".into(), fixture("broken/garbled.png"), 422),
        ("/predict/cnn".into(), npz.into(), ten_mb, 413),
        ("/predict/cnn".into(), npz.into(), fixture("k49/test_images_100.npz"), 413), // limit 50
        ("/predict/cnn?top_k=0".into(), npz.into(), fixture("k49/test_image_0.npz"), 400),
    ];
    for (path, ct, body, status) in cases {
        let reply = h.post(&path, &ct, &body);
        assert_eq!(reply.status, status, "{path} {ct} ({} bytes): {}", body.len(), reply.body);
        let json = reply.json();
        assert!(json["error"].as_str().is_some_and(|e| !e.is_empty()), "{}", reply.body);
        // The host is still up and the component still answers.
        assert_eq!(h.curl_npz("cnn", "test_image_0.npz", "").status, 200);
    }
    // Too many images for one answer: the 413 names the route that takes them.
    let reply = h.post("/predict/cnn", npz, &fixture("k49/test_images_100.npz"));
    let expected = reply.json()["expected"].as_str().unwrap_or_default().to_owned();
    assert!(expected.contains("at most 50 images") && expected.contains("/async_predict/"), "{}", reply.body);
    let reply = h.post("/predict/cnn", npz, &vec![0u8; 5 << 20]);
    let expected = reply.json()["expected"].as_str().unwrap_or_default().to_owned();
    assert!(reply.status == 413 && expected.contains("/async_predict/"), "{}", reply.body);
    // Multipart with the wrong field name, and the same file as a raw body / PNG / JSON work.
    let (ct, body) = multipart_body("file", "x.npz", npz, &fixture("k49/test_image_0.npz"));
    assert_eq!(h.post("/predict/cnn", &ct, &body).status, 422);
    assert_eq!(h.post("/predict/cnn", npz, &fixture("k49/test_images_10.npz")).json()["count"], 10);
    for (ct, file) in [("image/png", "samples/k49_0_dark.png"), ("image/png", "samples/k49_1_paper.png"), ("image/jpeg", "samples/k49_1_paper.jpg")] {
        let reply = h.post("/predict/cnn", ct, &fixture(file));
        assert_eq!((reply.status, reply.json()["count"].as_u64()), (200, Some(1)), "{file}: {}", reply.body);
    }
    assert_eq!(h.post("/predict/cnn", "application/json", &fixture("samples/k49_3to5.json")).json()["count"], 3);
}

#[test]
fn wasm_output_equals_native_output() {
    let h = PredictHost::start("parity", &[]);
    let native = h.native_model();
    let (ct, body) = multipart_body("upload_file", "test_images_100.npz", "application/x-npz", &fixture("k49/test_images_100.npz"));
    let options = PredictOptions { top_k: Some(49), ..Default::default() };
    let want = predict_request(&native, Some(&ct), &body, &options).unwrap();
    let got = h.post("/predict/cnn?top_k=49", &ct, &body).json();
    let got_results = got["results"].as_array().unwrap();
    assert_eq!((want.results.len(), got_results.len()), (100, 100));
    for (w, g) in want.results.iter().zip(got_results) {
        assert_eq!(g["prediction_label"].as_str().unwrap(), w.prediction_label);
        let (want_top, got_top) = (w.top_k.as_ref().unwrap(), g["top_k"].as_array().unwrap());
        assert_eq!((want_top.len(), got_top.len()), (49, 49));
        for (wa, ga) in want_top.iter().zip(got_top) {
            assert_eq!(ga["prediction_label"].as_str().unwrap(), wa.prediction_label);
            let (a, b): (f32, f32) = (ga["probability"].as_str().unwrap().parse().unwrap(), wa.probability.parse().unwrap());
            assert!((a - b).abs() <= 1e-6, "class {}: wasm {a} native {b}", wa.prediction_label);
        }
    }
}
