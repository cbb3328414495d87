//! Contact sheets over HTTP on the shipped spin.toml and `models/`: `POST /predict/{model}?format=png`
//! and `GET /tasks/{id}/sheet.png` answer PNGs of the grid the renderer promises, drawn by the
//! one renderer from the same results (the same upload gives the same bytes on both routes), at
//! most 100 tiles however big the batch; bad requests answer 4xx JSON.

use std::time::Duration;

use kana_inference::testing::fixture;
use serde_json::json;

use crate::support::{BytesReply, Options, TestHost, eventually, shipped_manifest};

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Width and height from the PNG's IHDR chunk, which always comes first.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(PNG_SIGNATURE), "not a PNG: {:?}", &png[..png.len().min(16)]);
    assert_eq!(&png[12..16], b"IHDR");
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

/// The sheet's size for `tiles` 28×28 images: rows of up to 10 cells of 104×132 px, an 8 px
/// margin each side and below, a 30 px title line (sheet.rs's layout, written out).
fn grid_size(tiles: u32) -> (u32, u32) {
    (tiles.clamp(1, 10) * 104 + 16, 30 + tiles.div_ceil(10) * 132 + 8)
}

fn check_sheet(reply: &BytesReply, tiles: u32, images: u32) {
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.header("content-type"), Some("image/png"));
    assert_eq!((reply.header("x-sheet-tiles"), reply.header("x-sheet-images")), (Some(tiles.to_string().as_str()), Some(images.to_string().as_str())));
    assert_eq!(png_size(&reply.body), grid_size(tiles));
}

/// `count` 28×28 images as the JSON body the drawing page sends, `{"images": [...]}`.
fn json_images(count: usize) -> Vec<u8> {
    let image = |i: usize| -> Vec<Vec<u8>> { (0..28).map(|y| (0..28).map(|x| if (6 + i % 9..16 + i % 9).contains(&x) && (8..20).contains(&y) { 255 } else { 0 }).collect()).collect() };
    serde_json::to_vec(&json!({ "images": (0..count).map(image).collect::<Vec<_>>() })).unwrap()
}

#[test]
fn predict_and_task_sheets_are_the_same_png_of_the_grid_and_errors_are_json() {
    let (_dir, manifest) = shipped_manifest(|text| text);
    let host = TestHost::start_with(Options { manifest: Some(manifest), ..Default::default() });
    let npz = fixture("k49/test_images_10.npz");

    // The canonical model name, so both titles read "hiragana-edge · 10 images".
    let now = host.fetch_bytes("POST", "/predict/hiragana-edge?format=png", Some("application/x-npz"), &npz);
    check_sheet(&now, 10, 10);

    let submitted = host.post_as("/async_predict/hiragana-edge", "application/x-npz", &npz);
    assert_eq!(submitted.status, 202, "{}", submitted.body);
    let id = submitted.json()["task_id"].as_str().unwrap().to_owned();
    let later = eventually(Duration::from_secs(60), "the job's sheet", || {
        let reply = host.fetch_bytes("GET", &format!("/tasks/{id}/sheet.png"), None, b"");
        (reply.status != 409).then_some(reply)
    });
    check_sheet(&later, 10, 10);
    assert!(now.body == later.body, "the job's sheet differs from /predict's for the same upload");

    // A batch over the cap draws the first 100 only.
    let big = host.fetch_bytes("POST", "/predict/cnn?format=png", Some("application/json"), &json_images(130));
    check_sheet(&big, 100, 130);

    let unknown = host.fetch_bytes("GET", "/tasks/20240101_000000_aaaaaaaaaaaaaaaaaaaaaaaaa/sheet.png", None, b"");
    assert_eq!((unknown.status, unknown.json()["kind"].as_str()), (404, Some("unknown_task")));
    let bad_format = host.fetch_bytes("POST", "/predict/cnn?format=gif", Some("application/x-npz"), &npz);
    assert_eq!((bad_format.status, bad_format.json()["kind"].as_str()), (400, Some("bad_query")));
    let garbled = host.fetch_bytes("POST", "/predict/cnn?format=png", Some("application/x-npz"), b"not an npz");
    assert_eq!((garbled.status, garbled.header("content-type")), (422, Some("application/json")));
    assert_eq!(garbled.json()["kind"].as_str(), Some("malformed_input"));
}
