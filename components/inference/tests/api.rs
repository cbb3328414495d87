//! The whole "request bytes → /predict JSON" path, as every component runs it.

use kana_inference::testing::{self, fixture, multipart_body};
use kana_inference::{Model, PredictOptions, PredictResponse, ResponseFormat, parse_format, parse_top_k, predict_request, predict_sheet, sheet, task_id};

fn model() -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    let card = testing::write_reference_cnn(dir.path(), "cnn", 42, false).unwrap();
    let model = Model::load(card, dir.path()).unwrap();
    (dir, model)
}

fn is_timestamp(s: &str) -> bool {
    s.len() == 15 && s.as_bytes()[8] == b'_' && s.chars().enumerate().all(|(i, c)| i == 8 || c.is_ascii_digit())
}

fn check_response(model: &Model, response: &PredictResponse, count: usize) {
    assert_eq!(response.model, "cnn");
    assert_eq!(response.model_version, model.card.version);
    assert_eq!((response.count, response.results.len()), (count, count));
    // The reference's `YYYYMMDD_hhmmss_` prefix, then the jobs' random part: one scheme.
    assert!(is_timestamp(&response.task_id[..15]) && task_id::is_valid(&response.task_id), "task id {}", response.task_id);
    for (i, r) in response.results.iter().enumerate() {
        assert_eq!(r.index, i);
        assert!(is_timestamp(&r.start_timestamp), "{}", r.start_timestamp);
        let class: usize = r.prediction_label.parse().unwrap();
        assert_eq!(r.prediction, model.card.classes[class].label);
        let p: f32 = r.probability.parse().unwrap();
        assert!(p > 1.0 / 49.0 && p <= 1.0, "best probability {p}");
    }
    assert!(response.timing_ms.total >= response.timing_ms.inference);
}

#[test]
fn reference_curl_shapes_return_1_10_100_results() {
    let (_dir, model) = model();
    for (file, count) in [("test_image_0.npz", 1), ("test_images_10.npz", 10), ("test_images_100.npz", 100)] {
        let (ct, body) = multipart_body("upload_file", file, "application/x-npz", &fixture(&format!("k49/{file}")));
        let response = predict_request(&model, Some(&ct), &body, &PredictOptions::default()).unwrap();
        check_response(&model, &response, count);
        // Keeps the reference's JSON value types.
        let json = serde_json::to_value(&response).unwrap();
        let first = &json["results"][0];
        assert!(first["index"].is_u64() && first["prediction_label"].is_string() && first["probability"].is_string());
        assert!(first.get("top_k").is_none());
    }
}

#[test]
fn top_k_lists_alternatives_best_first_and_is_validated() {
    let (_dir, model) = model();
    let npz = fixture("k49/test_images_10.npz");
    let options = PredictOptions { top_k: Some(3), ..Default::default() };
    let response = predict_request(&model, Some("application/x-npz"), &npz, &options).unwrap();
    for r in &response.results {
        let top = r.top_k.as_ref().unwrap();
        assert_eq!(top.len(), 3);
        assert_eq!((top[0].prediction_label.as_str(), top[0].probability.as_str()), (r.prediction_label.as_str(), r.probability.as_str()));
        let p: Vec<f32> = top.iter().map(|a| a.probability.parse().unwrap()).collect();
        assert!(p[0] >= p[1] && p[1] >= p[2]);
    }
    for k in [0, 50] {
        let options = PredictOptions { top_k: Some(k), ..Default::default() };
        let err = predict_request(&model, Some("application/x-npz"), &npz, &options).unwrap_err();
        assert_eq!(err.status(), 400);
    }
    assert_eq!(parse_top_k(Some("a=1&top_k=5")).unwrap(), Some(5));
    assert_eq!(parse_top_k(None).unwrap(), None);
    assert_eq!(parse_top_k(Some("top_k=x")).unwrap_err().status(), 400);
}

#[test]
fn same_images_give_the_same_predictions_in_every_format() {
    let (_dir, model) = model();
    let labels = |ct: &str, body: &[u8]| -> Vec<(String, String)> {
        let r = predict_request(&model, Some(ct), body, &PredictOptions::default()).unwrap();
        r.results.into_iter().map(|r| (r.prediction_label, r.probability)).collect()
    };
    let from_npz = labels("application/x-npz", &fixture("k49/test_image_0.npz"));
    assert_eq!(labels("image/png", &fixture("samples/k49_0_dark.png")), from_npz);
    let batch = labels("application/x-npz", &fixture("k49/test_images_10.npz"));
    assert_eq!(labels("application/json", &fixture("samples/k49_2.json"))[0], batch[2]);
}

#[test]
fn errors_carry_status_and_task_ids_are_the_one_scheme() {
    let (_dir, model) = model();
    let err = predict_request(&model, Some("application/x-npz"), &fixture("broken/wrong_shape.npz"), &PredictOptions::default()).unwrap_err();
    assert_eq!(err.status(), 422);
    assert_eq!(err.body().kind, "wrong_shape");
    let ok = predict_request(&model, Some("application/x-npz"), &fixture("k49/test_images_10.npz"), &PredictOptions::default()).unwrap();
    assert!(task_id::is_valid(&ok.task_id), "/predict ids have the jobs' shape: {}", ok.task_id);
}

#[test]
fn format_png_draws_the_first_tiles_of_the_same_predictions() {
    assert_eq!(parse_format(Some("top_k=2&format=png")).unwrap(), ResponseFormat::Png);
    assert_eq!((parse_format(None).unwrap(), parse_format(Some("format=json")).unwrap()), (ResponseFormat::Json, ResponseFormat::Json));
    assert_eq!(parse_format(Some("format=gif")).unwrap_err().status(), 400);

    let (_dir, model) = model();
    let npz = fixture("k49/test_images_100.npz");
    let options = PredictOptions::default();
    let drawn = predict_sheet(&model, Some("application/x-npz"), &npz, &options).unwrap();
    assert_eq!((drawn.tiles, drawn.images), (sheet::MAX_TILES.min(100), 100));
    // The same bytes as drawing predict_request's own results: one path, one renderer.
    let response = predict_request(&model, Some("application/x-npz"), &npz, &options).unwrap();
    let images = kana_inference::decode_upload(Some("application/x-npz"), &npz, 28, 28, &options.limits).unwrap();
    assert_eq!(drawn.png, sheet::contact_sheet("cnn", &images, &response.results).png);
    // Bad input is the same 4xx as the JSON answer.
    let garbled = predict_sheet(&model, Some("application/x-npz"), b"not an npz", &options).unwrap_err();
    assert_eq!(garbled.status(), 422);
}
