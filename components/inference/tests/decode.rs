//! Upload decoding on the committed fixtures: every accepted format, and every broken file gets
//! the right error (and so the right HTTP status).

use kana_inference::testing::{fixture, multipart_body};
use kana_inference::{Images, InputError, Limits, decode_upload};

fn decode(ct: Option<&str>, body: &[u8]) -> Result<Images, InputError> {
    decode_upload(ct, body, 28, 28, &Limits::default())
}

fn k49(n: usize) -> Images {
    let name = if n == 1 { "k49/test_image_0.npz".to_string() } else { format!("k49/test_images_{n}.npz") };
    decode(Some("application/x-npz"), &fixture(&name)).unwrap()
}

#[test]
fn k49_fixtures_decode_to_1_10_100_images_of_the_same_test_set() {
    let (one, ten, hundred) = (k49(1), k49(10), k49(100));
    assert_eq!((one.count, ten.count, hundred.count), (1, 10, 100));
    // All three are prefixes of the K49 test set.
    assert_eq!(one.image(0), ten.image(0));
    assert_eq!(ten.pixels, hundred.slice(0, 10).pixels);
    assert!(one.pixels.iter().all(|p| (0.0..=255.0).contains(p) && p.fract() == 0.0));
    assert!(one.pixels.iter().any(|&p| p > 200.0), "strokes are bright in K49");
}

#[test]
fn multipart_like_the_reference_curl_and_sniffed_octet_stream_give_the_same_images() {
    let npz = fixture("k49/test_images_10.npz");
    let (ct, body) = multipart_body("upload_file", "test_images_10.npz", "application/x-npz", &npz);
    assert_eq!(decode(Some(&ct), &body).unwrap(), k49(10));
    let (ct, body) = multipart_body("upload_file", "test_images_10.npz", "application/octet-stream", &npz);
    assert_eq!(decode(Some(&ct), &body).unwrap(), k49(10));
    assert_eq!(decode(None, &npz).unwrap(), k49(10));
    let (ct, body) = multipart_body("file", "x.npz", "application/x-npz", &npz);
    assert_eq!(decode(Some(&ct), &body).unwrap_err(), InputError::MissingField);
}

#[test]
fn png_jpeg_and_json_samples() {
    // The dataset image saved as PNG decodes to exactly the same pixels.
    let dark = decode(Some("image/png"), &fixture("samples/k49_0_dark.png")).unwrap();
    assert_eq!(dark.pixels, k49(1).pixels);
    // Dark ink on white paper, 84×84: inverted to bright strokes on black and fitted to 28×28.
    for (ct, file) in [("image/png", "samples/k49_1_paper.png"), ("image/jpeg", "samples/k49_1_paper.jpg")] {
        let paper = decode(Some(ct), &fixture(file)).unwrap();
        assert_eq!((paper.count, paper.height, paper.width), (1, 28, 28));
        let border: f32 = paper.pixels[..28].iter().sum::<f32>() / 28.0;
        assert!(border < 30.0, "{file}: background should be dark after inversion, mean {border}");
        assert!(paper.pixels.iter().any(|&p| p > 150.0), "{file}: strokes should be bright");
    }
    let json = decode(Some("application/json"), &fixture("samples/k49_2.json")).unwrap();
    assert_eq!(json.pixels, k49(10).image(2));
    let batch = decode(Some("application/json"), &fixture("samples/k49_3to5.json")).unwrap();
    assert_eq!(batch.pixels, k49(10).slice(3, 6).pixels);
    // float32 in [0, 1], shape (N, 1, 28, 28), saved under a name other than arr_0.
    let floats = decode(Some("application/x-npz"), &fixture("samples/float01_n1hw.npz")).unwrap();
    assert_eq!(floats.count, 3);
    for (a, b) in floats.pixels.iter().zip(&k49(10).slice(0, 3).pixels) {
        assert!((a - b).abs() < 1e-3);
    }
}

#[test]
fn broken_fixtures_get_clear_errors_with_the_right_status() {
    let npz = Some("application/x-npz");
    let cases: Vec<(&str, Option<&str>, u16, &str)> = vec![
        ("broken/truncated.npz", npz, 422, "malformed_input"),
        ("broken/wrong_dtype.npz", npz, 422, "wrong_dtype"),
        ("broken/wrong_shape.npz", npz, 422, "wrong_shape"),
        ("broken/text.npz", npz, 422, "malformed_input"),
        ("broken/text.npz", Some("application/octet-stream"), 415, "unsupported_media_type"),
        ("broken/text.npz", Some("text/plain"), 415, "unsupported_media_type"),
        ("broken/empty.npz", npz, 422, "empty_body"),
        ("broken/garbled.png", Some("image/png"), 422, "malformed_input"),
    ];
    for (file, ct, status, kind) in cases {
        let err = decode(ct, &fixture(file)).unwrap_err();
        assert_eq!((err.status(), err.kind()), (status, kind), "{file} as {ct:?}: {err}");
        let body = err.body();
        assert!(!body.error.is_empty() && body.expected.is_some());
    }
    let err = decode(npz, &fixture("broken/wrong_dtype.npz")).unwrap_err();
    assert!(err.to_string().contains("expected uint8"), "{err}");
}

#[test]
fn limits_bad_json_and_out_of_range_values() {
    let ten = fixture("k49/test_images_10.npz");
    let small = Limits { max_images: 5, max_body_bytes: 1 << 20 };
    let err = decode_upload(Some("application/x-npz"), &ten, 28, 28, &small).unwrap_err();
    assert_eq!((err.status(), err), (413, InputError::TooManyImages { count: 10, limit: 5 }));
    let ten_mb = vec![7u8; 10 * 1024 * 1024];
    assert_eq!(decode(Some("application/x-npz"), &ten_mb).unwrap_err().status(), 413);
    for (body, kind) in [
        (&b"[[1, 2], [3]]"[..], "wrong_shape"),
        (b"[1, 2, 3]", "wrong_shape"),
        (b"{\"pixels\": []}", "malformed_input"),
        (b"[[1, 2", "malformed_input"),
    ] {
        let err = decode(Some("application/json"), body).unwrap_err();
        assert_eq!(err.kind(), kind, "{}", String::from_utf8_lossy(body));
    }
    let too_bright = serde_json::to_vec(&vec![vec![300; 28]; 28]).unwrap();
    assert_eq!(decode(Some("application/json"), &too_bright).unwrap_err().kind(), "out_of_range");
    let wrong_size = serde_json::to_vec(&vec![vec![0; 27]; 27]).unwrap();
    assert_eq!(decode(Some("application/json"), &wrong_size).unwrap_err().status(), 422);
}

/// An .npy file: `header` is the dict numpy writes, padded to 64 bytes, then `data`.
fn npy(header: &str, data: &[u8]) -> Vec<u8> {
    let mut dict = header.to_string();
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((dict.len() as u16).to_le_bytes());
    out.extend(dict.as_bytes());
    out.extend(data);
    out
}

/// A one-member npz (`arr_0.npy`), deflated.
fn npz_of(member: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("arr_0.npy", options).unwrap();
    zip.write_all(member).unwrap();
    zip.finish().unwrap().into_inner()
}

#[test]
fn npz_bombs_are_refused_from_the_header_before_any_allocation() {
    let npz = Some("application/x-npz");
    // ~300 bytes declaring a billion 28×28 images: refused on the header's shape.
    let billion = npz_of(&npy("{'descr': '|u1', 'fortran_order': False, 'shape': (1000000000, 28, 28), }", &[]));
    assert!(billion.len() < 400, "{} bytes", billion.len());
    let err = decode(npz, &billion).unwrap_err();
    assert_eq!((err.status(), err.kind()), (413, "too_many_images"), "{err}");
    // A flat 1e9-value array is the wrong shape, whatever its size.
    let flat = npz_of(&npy("{'descr': '|u1', 'fortran_order': False, 'shape': (1000000000,), }", &[]));
    assert_eq!(decode(npz, &flat).unwrap_err().kind(), "wrong_shape");
    // A v2 header claiming 4 GB of header text.
    let mut huge_header = b"\x93NUMPY\x02\x00".to_vec();
    huge_header.extend(u32::MAX.to_le_bytes());
    let err = decode(npz, &npz_of(&huge_header)).unwrap_err();
    assert_eq!(err.status(), 422, "{err}");
    assert!(err.to_string().contains("header claims"), "{err}");
    // Zeros that inflate far past what the header promises: only the promised bytes are read.
    let mut padded = npy("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 28, 28), }", &[0u8; 2 * 784]);
    padded.extend(vec![0u8; 8 << 20]);
    let bomb = npz_of(&padded);
    assert!(bomb.len() < 64 << 10, "{} bytes compress to {}", padded.len(), bomb.len());
    let limits = Limits { max_images: 1000, max_body_bytes: 1 << 20 };
    let err = decode_upload(npz, &bomb, 28, 28, &Limits { max_images: 1, ..limits }).unwrap_err();
    assert_eq!(err.status(), 413, "{err}");
    // Data shorter than the header says.
    let short = npz_of(&npy("{'descr': '|u1', 'fortran_order': False, 'shape': (3, 28, 28), }", &[1u8; 100]));
    let err = decode(npz, &short).unwrap_err();
    assert!(err.to_string().contains("ends early"), "{err}");
}

#[test]
fn npz_byte_orders_and_fortran_layout_read_the_same_pixels() {
    let npz = Some("application/x-npz");
    let reference = k49(10).slice(0, 2);
    let c_order: Vec<u8> = reference.pixels.iter().map(|&p| p as u8).collect();
    // Column-major: the first axis varies fastest.
    let mut fortran = vec![0u8; c_order.len()];
    for n in 0..2 {
        for y in 0..28 {
            for x in 0..28 {
                fortran[n + 2 * (y + 28 * x)] = c_order[n * 784 + y * 28 + x];
            }
        }
    }
    let f_npz = npz_of(&npy("{'descr': '|u1', 'fortran_order': True, 'shape': (2, 28, 28), }", &fortran));
    assert_eq!(decode(npz, &f_npz).unwrap(), reference);
    let big_endian: Vec<u8> = c_order.iter().flat_map(|&p| (p as f32 / 255.0).to_be_bytes()).collect();
    let be = decode(npz, &npz_of(&npy("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 28, 28), }", &big_endian))).unwrap();
    for (a, b) in be.pixels.iter().zip(&reference.pixels) {
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
    }
    let ints = npz_of(&npy("{'descr': '<i4', 'fortran_order': False, 'shape': (1, 28, 28), }", &[0u8; 4 * 784]));
    assert_eq!(decode(npz, &ints).unwrap_err().kind(), "wrong_dtype");
}
