//! Upload decoding on the committed fixtures: every accepted format, and every broken file gets
//! the right error (and so the right HTTP status).

mod support;

use kana_inference::decode::MAX_PICTURE_SIDE;
use kana_inference::testing::{fixture, multipart_body};
use kana_inference::{Images, InputError, Limits, decode_upload};
use support::{jpeg_with_size, npy, peak_bytes, png_chunk, png_header};

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

/// A valid `width`×`height` 8-bit gray PNG of zeros, written row by row (never held whole):
/// 8192×8192 compresses to ~65 KB.
fn png_of_zeros(width: u32, height: u32) -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let row = vec![0u8; width as usize + 1]; // filter byte + pixels
    for _ in 0..height {
        z.write_all(&row).unwrap();
    }
    let mut png = png_header(width, height, 8, 0);
    png.truncate(png.len() - 2 * 12 - 8); // drop the placeholder IDAT and IEND
    png_chunk(&mut png, b"IDAT", &z.finish().unwrap());
    png_chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn picture_bombs_are_refused_from_the_header_before_any_pixel_buffer() {
    let paper_rgb = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/paper_progressive.jpg")).unwrap();
    let gray_jpeg = fixture("samples/k49_1_paper.jpg");
    let valid_8192 = png_of_zeros(8192, 8192);
    assert!(valid_8192.len() < 100 << 10, "{} bytes", valid_8192.len());
    let (png, jpeg) = (Some("image/png"), Some("image/jpeg"));
    let cases: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
        ("a valid 8192×8192 PNG", png, valid_8192.clone()),
        ("the same, sniffed", None, valid_8192.clone()),
        ("a 100000×100000 PNG header", png, png_header(100_000, 100_000, 8, 0)),
        ("one pixel too wide", png, png_header(MAX_PICTURE_SIDE + 1, 1, 8, 0)),
        ("4096×4096 RGBA16: 128 MiB decoded", png, png_header(4096, 4096, 16, 6)),
        ("a 65535×65535 JPEG", jpeg, jpeg_with_size(&gray_jpeg, 65535, 65535)),
        ("4096×4096 RGB JPEG: 144 MiB with progressive coefficients", jpeg, jpeg_with_size(&paper_rgb, 4096, 4096)),
    ];
    for (what, ct, body) in cases {
        let (result, peak) = peak_bytes(|| decode(ct, &body));
        let err = result.unwrap_err();
        assert_eq!((err.status(), err.kind()), (413, "picture_too_large"), "{what}: {err}");
        // No pixel buffer: what the decoders need to read a header (the JPEG one copies the body).
        assert!(peak < body.len() + (256 << 10), "{what}: {peak} bytes allocated before refusing");
        assert!(err.body().expected.unwrap().contains("4096×4096"), "{what}");
    }
    let (ct, body) = multipart_body("upload_file", "big.png", "image/png", &valid_8192);
    assert_eq!(decode(Some(&ct), &body).unwrap_err().kind(), "picture_too_large");
    let err = decode(png, &png_header(8192, 8192, 8, 0)).unwrap_err();
    assert!(err.to_string().contains("8192×8192"), "{err}");

    // Just within the limits: past the size check. The PNG then lacks its data; the JPEG
    // decoder is lenient and fills what its 84×84 data does not cover.
    assert_eq!(decode(png, &png_header(4096, 4096, 8, 6)).unwrap_err().kind(), "malformed_input");
    let lenient = decode(jpeg, &jpeg_with_size(&gray_jpeg, MAX_PICTURE_SIDE as u16, 16));
    assert!(lenient.as_ref().is_ok_and(|i| i.count == 1) || lenient.as_ref().unwrap_err().status() == 422, "{lenient:?}");
}

#[test]
fn a_picture_at_the_side_limit_still_decodes_into_one_buffer() {
    // 4096 wide (the limit) but short: debug builds decode pictures slowly.
    let (w, h) = (MAX_PICTURE_SIDE, 512);
    let body = png_of_zeros(w, h);
    let (images, peak) = peak_bytes(|| decode(Some("image/png"), &body).unwrap());
    assert_eq!((images.count, images.height, images.width), (1, 28, 28));
    assert!(images.pixels.iter().all(|&p| p == 0.0));
    // The 2 MiB gray buffer, decoded into once and kept: a gray picture is not copied to gray.
    let decoded = (w * h) as usize;
    assert!(peak < decoded + decoded / 2, "{peak} bytes for a {decoded}-byte picture");
}

#[test]
fn json_bombs_are_refused_without_building_a_value_tree() {
    let json = Some("application/json");
    let image = format!("[{}]", vec![format!("[{}]", vec!["0"; 28].join(",")); 28].join(","));
    // 2000 images of zeros: 3.1 MB, under the 4 MiB body limit. A serde_json::Value tree of it
    // would take ~75 MB; only up to `max_images` images' values (3.1 MB) are kept.
    let body = format!("[{}]", vec![image.as_str(); 2000].join(","));
    assert!(body.len() < Limits::default().max_body_bytes);
    let (result, peak) = peak_bytes(|| decode(json, body.as_bytes()));
    assert_eq!(result.unwrap_err(), InputError::TooManyImages { count: 2000, limit: 1000 });
    // 784,000 f32 values grow a Vec to 4 MiB; its last move holds 2 + 4 MiB for a moment.
    assert!(peak < 7 << 20, "{peak} bytes");

    // A million empty arrays: nothing kept.
    let empties = format!("[[]{}]", ",[]".repeat(1_000_000));
    let (result, peak) = peak_bytes(|| decode(json, empties.as_bytes()));
    assert_eq!(result.unwrap_err().kind(), "wrong_shape");
    assert!(peak < 64 << 10, "{peak} bytes");

    // 100,000 levels of nesting: refused at the fifth level, without recursing further.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (result, peak) = peak_bytes(|| decode(json, deep.as_bytes()));
    let err = result.unwrap_err();
    assert_eq!(err.kind(), "wrong_shape", "{err}");
    assert!(err.to_string().contains("deeper than 4"), "{err}");
    assert!(peak < 64 << 10, "{peak} bytes");
    // Deep nesting under a key that is skipped: serde_json skips it without recursing (a byte
    // per level), so it costs neither stack nor much memory.
    let skipped = format!("{{\"x\": {}{}, \"images\": {image}}}", "[".repeat(100_000), "]".repeat(100_000));
    let (result, peak) = peak_bytes(|| decode(json, skipped.as_bytes()));
    assert_eq!(result.unwrap().count, 1);
    assert!(peak < 256 << 10, "{peak} bytes");

    // Over the body limit: refused before parsing, whatever the JSON says.
    let small = Limits { max_images: 1000, max_body_bytes: 100 };
    let err = decode_upload(json, image.as_bytes(), 28, 28, &small).unwrap_err();
    assert_eq!(err, InputError::TooLarge { bytes: image.len(), limit: 100 });

    // The object form still works; other keys are skipped; a second 'images' is an error.
    let object = format!("{{\"meta\": {{\"a\": [1, [2]]}}, \"images\": {image}}}");
    assert_eq!(decode(json, object.as_bytes()).unwrap().count, 1);
    let twice = format!("{{\"images\": {image}, \"images\": {image}}}");
    assert_eq!(decode(json, twice.as_bytes()).unwrap_err().kind(), "malformed_input");
    for (body, kind) in [
        ("[[[1, 2]], [3, 4]]", "wrong_shape"),
        ("[[1, 2], [[3], [4]]]", "wrong_shape"),
        ("[[1, \"2\"]]", "wrong_shape"),
        ("[[1, null]]", "wrong_shape"),
        ("{\"images\": {\"images\": [[1]]}}", "wrong_shape"),
        ("[[1, 2]] trailing", "malformed_input"),
        ("[[1e999]]", "malformed_input"),
        ("7", "wrong_shape"),
    ] {
        let err = decode(json, body.as_bytes()).unwrap_err();
        assert_eq!(err.kind(), kind, "{body}: {err}");
    }
}

#[test]
fn extreme_configured_limits_neither_panic_nor_allocate_what_a_header_claims() {
    // What a Spin variable such as max_images=18446744073709551615 would give.
    let unbounded = Limits { max_images: usize::MAX, max_body_bytes: usize::MAX };
    let npz = Some("application/x-npz");
    // 1e9 images allowed, but the data is not there: reading stops at what the stream holds.
    let billion = npz_of(&npy("{'descr': '|u1', 'fortran_order': False, 'shape': (1000000000, 28, 28), }", &[0u8; 784]));
    let (result, peak) = peak_bytes(|| decode_upload(npz, &billion, 28, 28, &unbounded));
    assert!(result.unwrap_err().to_string().contains("ends early"));
    assert!(peak < 8 << 20, "{peak} bytes");
    // A count whose pixel total overflows usize.
    let overflow = npz_of(&npy("{'descr': '|u1', 'fortran_order': False, 'shape': (4611686018427387904, 28, 28), }", &[]));
    assert_eq!(decode_upload(npz, &overflow, 28, 28, &unbounded).unwrap_err().status(), 413);
    let json = format!("[{}]", vec![format!("[{}]", vec!["1"; 28].join(",")); 28].join(","));
    assert_eq!(decode_upload(Some("application/json"), json.as_bytes(), 28, 28, &unbounded).unwrap().count, 1);
    // The smallest: every body is too large, every batch too many.
    let none = Limits { max_images: 0, max_body_bytes: 0 };
    assert_eq!(decode_upload(npz, &billion, 28, 28, &none).unwrap_err().status(), 413);
}

/// An end of central directory claiming `entries` files whose directory starts at `start`, in
/// zip64 form when `zip64`; no files, no directory.
fn zip_directory_claim(entries: u64, start: u64, zip64: bool) -> Vec<u8> {
    let mut out = vec![0u8; 64];
    if zip64 {
        let record = out.len() as u64;
        out.extend(0x0606_4b50u32.to_le_bytes());
        out.extend(44u64.to_le_bytes());
        out.extend([45, 0, 45, 0]);
        out.extend([0u8; 8]); // this disk, disk with the directory
        out.extend(entries.to_le_bytes());
        out.extend(entries.to_le_bytes());
        out.extend(46u64.to_le_bytes()); // directory size
        out.extend(start.to_le_bytes());
        out.extend(0x0706_4b50u32.to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend(record.to_le_bytes());
        out.extend(1u32.to_le_bytes());
    }
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u8; 4]);
    let (n, s) = if zip64 { (0xFFFF, 0xFFFF_FFFF) } else { (entries as u16, start as u32) };
    out.extend([n.to_le_bytes(), n.to_le_bytes()].concat());
    out.extend(46u32.to_le_bytes());
    out.extend(s.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

#[test]
fn zip_directories_claiming_many_files_are_refused_without_reserving_for_them() {
    let npz = Some("application/x-npz");
    // The zip crate checks the claims against the archive's size before reserving its table.
    for (entries, start, zip64) in [(65_535, 60, false), (60_000, 60_000, false), (1 << 40, 1 << 41, true), (u64::MAX / 2, u64::MAX - 1, true)] {
        let body = zip_directory_claim(entries, start, zip64);
        let (result, peak) = peak_bytes(|| decode(npz, &body));
        let err = result.unwrap_err();
        assert_eq!(err.status(), 422, "{entries} entries: {err}");
        assert!(peak < 64 << 10, "{entries} entries at {start}: {peak} bytes");
    }
}
