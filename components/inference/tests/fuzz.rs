//! Mutation fuzzing of `decode_upload`, the one entry point every component feeds request bodies
//! to, within a fixed budget (no nightly toolchain, so no cargo-fuzz): seeded mutations of a
//! committed corpus (tests/corpus/, the fixtures) and of bombs made here, sent with their own
//! content type, a wrong one, none (sniffed) or wrapped in multipart. Every case must
//!
//! - not panic;
//! - fail, if it fails, with a 4xx error that has a JSON body;
//! - succeed, if it succeeds, with 1..=max_images images of 28×28 pixels in 0..=255;
//! - allocate at most a bound set by the body size and the limits (not by what headers claim).
//!
//! `KANA_FUZZ_CASES` (default 1000, a few seconds in a debug build) and `KANA_FUZZ_SEED` (default
//! fixed, so CI runs the same cases) set the budget; `KANA_FUZZ_FIRST` starts at a given case, to
//! replay one. Failing inputs are written to `target/fuzz-failures/`; a longer run and its
//! numbers are in tests/corpus/README.md.

mod support;

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kana_inference::decode::{MAX_PICTURE_DECODE_BYTES, MAX_PICTURE_SIDE};
use kana_inference::testing::{fixture, multipart_body};
use kana_inference::{Images, InputError, Limits, decode_upload};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::{fix_png_crcs, jpeg_sof, peak_bytes, png_header};

const SIDE: usize = 28;
const MULTIPART_TYPE: &str = "multipart/form-data; boundary=kana-fuzz-boundary";
/// Mutated bodies are cut to this, so no case spends long on sheer size.
const MAX_CASE_BYTES: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Npz,
    Png,
    Jpeg,
    Json,
    Multipart,
    Other,
}

struct Seed {
    name: String,
    kind: Kind,
    bytes: Vec<u8>,
}

impl Kind {
    fn content_type(self) -> Option<&'static str> {
        match self {
            Kind::Npz => Some("application/x-npz"),
            Kind::Png => Some("image/png"),
            Kind::Jpeg => Some("image/jpeg"),
            Kind::Json => Some("application/json"),
            Kind::Multipart => Some(MULTIPART_TYPE),
            Kind::Other => None,
        }
    }
}

fn kind_of(name: &str) -> Kind {
    match name.rsplit('.').next() {
        Some("npz") => Kind::Npz,
        Some("png") => Kind::Png,
        Some("jpg") => Kind::Jpeg,
        Some("json") => Kind::Json,
        Some("multipart") => Kind::Multipart,
        _ => Kind::Other,
    }
}

/// The committed corpus, the fixtures, and bombs made here (too big, or too dull, to commit).
fn seeds() -> Vec<Seed> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut seeds: Vec<Seed> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| kind_of(&p.to_string_lossy()) != Kind::Other)
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            Seed { kind: kind_of(&name), bytes: std::fs::read(&p).unwrap(), name }
        })
        .collect();
    for name in [
        "k49/test_image_0.npz",
        "k49/test_images_10.npz",
        "samples/float01_n1hw.npz",
        "samples/k49_0_dark.png",
        "samples/k49_1_paper.png",
        "samples/k49_1_paper.jpg",
        "samples/k49_2.json",
        "broken/truncated.npz",
        "broken/wrong_dtype.npz",
        "broken/wrong_shape.npz",
        "broken/garbled.png",
    ] {
        seeds.push(Seed { name: name.into(), kind: kind_of(name), bytes: fixture(name) });
    }
    let generated: [(&str, Kind, Vec<u8>); 6] = [
        ("png 8192x8192 header", Kind::Png, png_header(8192, 8192, 8, 0)),
        ("png 4096x4096 rgba header", Kind::Png, png_header(4096, 4096, 8, 6)),
        ("npz shape (1e9, 28, 28)", Kind::Npz, npz_of("arr_0.npy", &npy("'|u1'", "(1000000000, 28, 28)", &[]), true)),
        ("json 5 levels deep", Kind::Json, b"[[[[[0]]]]]".to_vec()),
        ("json 2000 images", Kind::Json, {
            let image = format!("[{}]", vec![format!("[{}]", vec!["0"; SIDE].join(",")); SIDE].join(","));
            format!("[{}]", vec![image.as_str(); 2000].join(",")).into_bytes()
        }),
        ("npz zeros past the header", Kind::Npz, {
            let mut member = npy("'|u1'", "(1, 28, 28)", &[0; SIDE * SIDE]);
            member.extend(vec![0u8; 1 << 20]);
            npz_of("arr_0.npy", &member, true)
        }),
    ];
    seeds.extend(generated.into_iter().map(|(name, kind, bytes)| Seed { name: name.into(), kind, bytes }));
    seeds
}

/// An .npy member with this dtype and shape.
fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    support::npy(&format!("{{'descr': {descr}, 'fortran_order': False, 'shape': {shape}, }}"), data)
}

fn npz_of(name: &str, member: &[u8], deflate: bool) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let method = if deflate { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
    zip.start_file(name, zip::write::SimpleFileOptions::default().compression_method(method)).unwrap();
    zip.write_all(member).unwrap();
    zip.finish().unwrap().into_inner()
}

// ---- mutations ----

const BYTES: [u8; 12] = [0, 1, 0x7F, 0x80, 0xFF, b'[', b']', b',', b'0', b'9', b'-', b'\n'];
const U16S: [u16; 10] = [0, 1, 28, 255, 0x0FFF, 4096, 4097, 8192, 0x7FFF, 0xFFFF];
const U32S: [u32; 13] = [0, 1, 28, 255, 4096, 4097, 8192, 65535, 65536, 100_000, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF];
/// Text that means something to the JSON and .npy header parsers.
const TOKENS: [&str; 30] = [
    "[", "]", ",", "0", "255", "256", "-1", "0.5", "1e999", "3.4e38", "\"x\"", "null", "true", "{", "}",
    "\"images\":", "[[", "]]", ",0", "'|u1'", "'<f4'", "'>f8'", "'<i8'", "True", "(1000000000, 28, 28)", "(28, 28)",
    "(0, 28, 28)", "(3, 1, 28, 28)", "(18446744073709551615, 28, 28)", "'shape': ",
];

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// A position in `data` (0 when empty), biased to the first 64 bytes, where headers are.
fn position(rng: &mut StdRng, len: usize) -> usize {
    if len == 0 {
        0
    } else if rng.random_bool(0.4) {
        rng.random_range(0..len.min(64))
    } else {
        rng.random_range(0..len)
    }
}

/// One generic mutation, libFuzzer style.
fn mutate_bytes(rng: &mut StdRng, data: &mut Vec<u8>, donors: &[Seed]) {
    let len = data.len();
    let at = position(rng, len);
    match rng.random_range(0..11) {
        0 if len > 0 => {
            for _ in 0..rng.random_range(1..=8) {
                let i = position(rng, len);
                data[i] ^= 1 << rng.random_range(0..8);
            }
        }
        1 if len > 0 => data[at] = *pick(rng, &BYTES),
        2 if len >= 2 => {
            let v = *pick(rng, &U16S);
            let b = if rng.random_bool(0.5) { v.to_be_bytes() } else { v.to_le_bytes() };
            let at = at.min(len - 2);
            data[at..at + 2].copy_from_slice(&b);
        }
        3 if len >= 4 => {
            let v = *pick(rng, &U32S);
            let b = if rng.random_bool(0.5) { v.to_be_bytes() } else { v.to_le_bytes() };
            let at = at.min(len - 4);
            data[at..at + 4].copy_from_slice(&b);
        }
        4 => {
            let n = rng.random_range(1..=16);
            let random: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            data.splice(at..at, random);
        }
        5 if len > 0 => {
            let start = position(rng, len);
            let end = rng.random_range(start..=len.min(start + 256));
            let chunk = data[start..end].to_vec();
            data.splice(at..at, chunk);
        }
        6 if len > 0 => {
            let end = rng.random_range(at..=len.min(at + 256));
            data.drain(at..end);
        }
        7 => data.truncate(at),
        8 => {
            let donor = &pick(rng, donors).bytes;
            let from = position(rng, donor.len());
            data.truncate(at);
            data.extend_from_slice(&donor[from..]);
        }
        9 if len > 0 => {
            // A chunk repeated many times: growth that compresses well.
            let end = rng.random_range(at..=len.min(at + 16));
            let chunk = data[at..end].to_vec();
            let times = rng.random_range(2..=4096);
            let repeated: Vec<u8> = chunk.iter().copied().cycle().take(chunk.len() * times).collect();
            data.splice(end..end, repeated);
        }
        _ => {
            let token = pick(rng, &TOKENS).as_bytes();
            data.splice(at..at, token.iter().copied());
        }
    }
    data.truncate(MAX_CASE_BYTES);
}

/// A mutated body and how it is sent; the mutations know each format's framing where that lets
/// them get past checksums and containers to the parser behind.
fn make_case(rng: &mut StdRng, seeds: &[Seed]) -> (String, Option<String>, Vec<u8>) {
    let seed = pick(rng, seeds);
    let mut data = seed.bytes.clone();
    let rounds = rng.random_range(1..=4);
    match seed.kind {
        Kind::Npz if rng.random_bool(0.5) => data = mutate_npz_member(rng, &data, rounds, seeds).unwrap_or(data),
        Kind::Png if rng.random_bool(0.2) && data.len() >= 33 => {
            // IHDR: width, height, bit depth, colour type.
            data[16..20].copy_from_slice(&pick(rng, &U32S).to_be_bytes());
            data[20..24].copy_from_slice(&pick(rng, &U32S).to_be_bytes());
            data[24] = *pick(rng, &[1, 2, 4, 8, 16, 3, 0]);
            data[25] = *pick(rng, &[0, 2, 3, 4, 6, 1, 7]);
            fix_png_crcs(&mut data);
        }
        Kind::Jpeg if rng.random_bool(0.2) => {
            if let Some(at) = jpeg_sof(&data) {
                let (mut h, w) = (*pick(rng, &U16S), *pick(rng, &U16S));
                // The JPEG decoder fills a large frame its data does not cover, which takes
                // seconds in a debug build: keep one side small when both are within limits.
                if h.max(w) <= MAX_PICTURE_SIDE as u16 && h.min(w) > 255 {
                    h = 28;
                }
                data[at + 5..at + 7].copy_from_slice(&h.to_be_bytes());
                data[at + 7..at + 9].copy_from_slice(&w.to_be_bytes());
            }
        }
        _ => {
            for _ in 0..rounds {
                mutate_bytes(rng, &mut data, seeds);
            }
            if seed.kind == Kind::Png && rng.random_bool(0.8) {
                fix_png_crcs(&mut data);
            }
        }
    }
    let own = seed.kind.content_type().map(str::to_owned);
    let (ct, body) = match rng.random_range(0..20) {
        0..=10 => (own, data),
        11 | 12 => (None, data),
        13 => (Some("application/octet-stream".into()), data),
        14 | 15 if seed.kind != Kind::Multipart => {
            let part = pick(rng, &["application/x-npz", "image/png", "image/jpeg", "application/json", "application/octet-stream", "text/plain"]);
            let field = if rng.random_bool(0.9) { "upload_file" } else { "file" };
            let (ct, body) = multipart_body(field, "upload", part, &data);
            (Some(ct), body)
        }
        16 | 17 => {
            let other = pick(rng, &["application/x-npz", "image/png", "image/jpeg", "application/json", MULTIPART_TYPE]);
            (Some(other.to_string()), data)
        }
        _ => {
            let junk = pick(rng, &["text/plain", "multipart/form-data", "multipart/form-data; boundary=", "image/png; x=y", "", ";;"]);
            (Some(junk.to_string()), data)
        }
    };
    (seed.name.clone(), ct, body)
}

/// Mutates the .npy inside an npz, then zips it again (stored or deflated, under a random name),
/// so the mutations reach the .npy header parser instead of failing the zip's CRC.
fn mutate_npz_member(rng: &mut StdRng, npz: &[u8], rounds: usize, donors: &[Seed]) -> Option<Vec<u8>> {
    let mut archive = zip::ZipArchive::new(Cursor::new(npz)).ok()?;
    let mut member = Vec::new();
    archive.by_index(0).ok()?.read_to_end(&mut member).ok()?;
    for _ in 0..rounds {
        mutate_bytes(rng, &mut member, donors);
    }
    let name = *pick(rng, &["arr_0.npy", "arr_0.npy", "images.npy", "arr_0", "a/b.npy"]);
    Some(npz_of(name, &member, rng.random_bool(0.7)))
}

// ---- checks ----

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The most a case may allocate: a few copies of the body (multipart, the JPEG decoder's copy)
/// and the pixels the limits allow (the buffer, its growth and a Fortran-order reorder); when the
/// body holds a picture signature, what a picture may need to decode plus its gray copy; when it
/// holds a zip directory end, the file table the zip crate reserves from the count it claims
/// (checked against the archive's size: at most 65,535 entries, or one per 46 bytes in zip64,
/// of ~220 bytes each; corpus/zip_eocd_8193_entries.npz reserves 1.7 MiB).
fn allocation_bound(body: &[u8], limits: &Limits) -> usize {
    let values = limits.max_images.saturating_mul(SIDE * SIDE * 4);
    let mut bound = 4 * body.len() + 3 * values + (1 << 20);
    if contains(body, b"\x89PNG") || contains(body, &[0xFF, 0xD8, 0xFF]) {
        let side = MAX_PICTURE_SIDE as usize;
        bound += MAX_PICTURE_DECODE_BYTES as usize + 2 * side * side;
    }
    if contains(body, b"PK\x05\x06") {
        bound += (65_535 * 256).max(body.len() / 46 * 256);
    }
    bound
}

fn check(outcome: &Result<Images, InputError>, limits: &Limits) -> Result<String, String> {
    match outcome {
        Ok(images) => {
            if images.count == 0 || images.count > limits.max_images {
                return Err(format!("{} images with max_images {}", images.count, limits.max_images));
            }
            if (images.height, images.width) != (SIDE, SIDE) || images.pixels.len() != images.count * SIDE * SIDE {
                return Err(format!("{}×{}×{} with {} values", images.count, images.height, images.width, images.pixels.len()));
            }
            if let Some(p) = images.pixels.iter().find(|p| !(0.0..=255.0).contains(*p)) {
                return Err(format!("pixel value {p}"));
            }
            Ok("ok".into())
        }
        Err(e) => {
            let body = e.body();
            if !(400..500).contains(&e.status()) || body.error.is_empty() || body.kind != e.kind() || body.expected.is_none() {
                return Err(format!("error {} {:?} for {e}", e.status(), body));
            }
            Ok(e.kind().into())
        }
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

fn save_failure(seed: u64, case: u64, content_type: &Option<String>, body: &[u8], why: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-failures");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("seed{seed}-case{case}.bin"));
    std::fs::write(&path, body).unwrap();
    std::fs::write(path.with_extension("txt"), format!("content type: {content_type:?}\n{why}\n")).unwrap();
    path
}

#[test]
fn mutated_uploads_never_panic_answer_4xx_and_stay_within_memory_bounds() {
    let cases = env_number("KANA_FUZZ_CASES", 1000);
    let seed = env_number("KANA_FUZZ_SEED", 0x6b61_6e61);
    let first = env_number("KANA_FUZZ_FIRST", 0);
    let seeds = seeds();
    let limit_sets = [Limits::default(), Limits { max_images: 2, max_body_bytes: 64 << 10 }];
    let started = Instant::now();
    let (mut outcomes, mut failures) = (BTreeMap::<String, u64>::new(), Vec::new());
    let (mut slowest, mut largest) = ((Duration::ZERO, String::new()), (0usize, String::new()));
    // Every seed once as it is (regressions kept in the corpus included), then mutations.
    let unmutated = if first == 0 { seeds.len() as u64 } else { 0 };
    for case in first..first + unmutated + cases {
        let mut rng = StdRng::seed_from_u64(seed ^ case.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (from, content_type, body, limits) = match seeds.get(case as usize).filter(|_| case < unmutated) {
            Some(s) => (s.name.clone(), s.kind.content_type().map(str::to_owned), s.bytes.clone(), Limits::default()),
            None => {
                let (from, content_type, body) = make_case(&mut rng, &seeds);
                (from, content_type, body, *pick(&mut rng, &limit_sets))
            }
        };
        let t = Instant::now();
        let run = catch_unwind(AssertUnwindSafe(|| {
            peak_bytes(|| decode_upload(content_type.as_deref(), &body, SIDE, SIDE, &limits))
        }));
        let elapsed = t.elapsed();
        let label = format!("case {case} (from {from}, {content_type:?}, {} bytes)", body.len());
        let verdict = match &run {
            Err(panic) => {
                let message = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
                Err(format!("panicked: {}", message.unwrap_or_default()))
            }
            Ok((outcome, peak)) if *peak > allocation_bound(&body, &limits) => {
                Err(format!("allocated {peak} bytes (bound {}) and returned {:?}", allocation_bound(&body, &limits), outcome.as_ref().err()))
            }
            Ok((outcome, _)) => check(outcome, &limits),
        };
        match verdict {
            Ok(kind) => *outcomes.entry(kind).or_default() += 1,
            Err(why) => {
                let path = save_failure(seed, case, &content_type, &body, &why);
                failures.push(format!("{label}: {why} (input: {})", path.display()));
            }
        }
        if elapsed > slowest.0 {
            slowest = (elapsed, label.clone());
        }
        if let Ok((_, peak)) = run {
            if peak > largest.0 {
                largest = (peak, label);
            }
        }
    }
    eprintln!(
        "fuzz: {cases} cases (seed {seed}, from case {first}) in {:.1} s over {} seeds; outcomes {outcomes:?}",
        started.elapsed().as_secs_f64(),
        seeds.len()
    );
    eprintln!("fuzz: slowest {:.0} ms: {}", slowest.0.as_secs_f64() * 1e3, slowest.1);
    eprintln!("fuzz: largest allocation {:.1} MiB: {}", largest.0 as f64 / (1 << 20) as f64, largest.1);
    assert!(failures.is_empty(), "{} of {cases} cases failed:\n{}", failures.len(), failures.join("\n"));
    // The mutations must still reach the decoders, not just trip the first check.
    assert!(outcomes.get("ok").copied().unwrap_or(0) > cases / 50, "too few decodable cases: {outcomes:?}");
}
