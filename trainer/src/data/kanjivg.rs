//! KanjiVG stroke data (Ulrich Apel, CC BY-SA 3.0, <https://kanjivg.tagaini.net>): one SVG per
//! character, one `<path>` per stroke in writing order, in a 109×109 box. It ships as the PyPI
//! wheel `kanjivg`; `trainer fetch kanjivg` gets that wheel with pip, checks its sha256, and the
//! renderer reads `kanji/0XXXX.svg` straight from the zip.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};
use svgtypes::{SimplePathSegment, SimplifyingPathParser};

pub const WHEEL_VERSION: &str = "20260714";
pub const WHEEL_FILE: &str = "kanjivg-20260714-py3-none-any.whl";
pub const WHEEL_SHA256: &str = "5190e7ec4eb513dbe6865b2ed52c58287fc10ea514b9409e4cf66ce7db41644d";
pub const KANJIVG_DIR: &str = "data/kanjivg";
/// Side of the square every KanjiVG drawing is laid out in.
pub const BOX: f32 = 109.0;
pub const ATTRIBUTION: &str =
    "Stroke data: KanjiVG by Ulrich Apel (https://kanjivg.tagaini.net), CC BY-SA 3.0, from the PyPI wheel kanjivg 20260714";

pub type Point = [f32; 2];
/// A cubic Bézier segment: start, two control points, end.
pub type Cubic = [Point; 4];
/// One pen stroke: consecutive cubics, each starting where the previous ended.
pub type Stroke = Vec<Cubic>;

/// The strokes of one SVG, in document (= writing) order. Lines and quadratics become cubics.
pub fn parse_svg(text: &str) -> Result<Vec<Stroke>> {
    // KanjiVG files declare their `kvg:` attributes in an internal DTD subset.
    let options = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
    let doc = roxmltree::Document::parse_with_options(text, options).context("not well-formed XML")?;
    let mut strokes = Vec::new();
    for node in doc.descendants().filter(|n| n.has_tag_name("path")) {
        let Some(d) = node.attribute("d") else { continue };
        let stroke = parse_path(d).with_context(|| format!("path {:?}", node.attribute("id").unwrap_or("?")))?;
        if !stroke.is_empty() {
            strokes.push(stroke);
        }
    }
    ensure!(!strokes.is_empty(), "no stroke paths in the SVG");
    Ok(strokes)
}

fn parse_path(d: &str) -> Result<Stroke> {
    let mut stroke = Stroke::new();
    let mut at: Point = [0.0, 0.0];
    for segment in SimplifyingPathParser::from(d) {
        let p = |x: f64, y: f64| [x as f32, y as f32];
        match segment.context("bad path data")? {
            SimplePathSegment::MoveTo { x, y } => at = p(x, y),
            SimplePathSegment::LineTo { x, y } => {
                let to = p(x, y);
                stroke.push([at, lerp(at, to, 1.0 / 3.0), lerp(at, to, 2.0 / 3.0), to]);
                at = to;
            }
            SimplePathSegment::CurveTo { x1, y1, x2, y2, x, y } => {
                let to = p(x, y);
                stroke.push([at, p(x1, y1), p(x2, y2), to]);
                at = to;
            }
            SimplePathSegment::Quadratic { x1, y1, x, y } => {
                // Degree elevation: the same curve as a cubic.
                let (c, to) = (p(x1, y1), p(x, y));
                stroke.push([at, lerp(at, c, 2.0 / 3.0), lerp(to, c, 2.0 / 3.0), to]);
                at = to;
            }
            SimplePathSegment::ClosePath => {}
        }
    }
    Ok(stroke)
}

pub fn lerp(a: Point, b: Point, t: f32) -> Point {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t]
}

/// Point at `t` on a cubic.
pub fn cubic_at(c: &Cubic, t: f32) -> Point {
    let u = 1.0 - t;
    let (a, b, cc, d) = (u * u * u, 3.0 * u * u * t, 3.0 * u * t * t, t * t * t);
    [
        a * c[0][0] + b * c[1][0] + cc * c[2][0] + d * c[3][0],
        a * c[0][1] + b * c[1][1] + cc * c[2][1] + d * c[3][1],
    ]
}

/// Zip member name of a character's SVG in the wheel.
pub fn member_name(ch: char) -> String {
    format!("kanji/{:05x}.svg", ch as u32)
}

/// The strokes of each character in `chars`, read from the wheel.
pub fn load_from_wheel(wheel: &Path, chars: &[char]) -> Result<Vec<Vec<Stroke>>> {
    let file = std::fs::File::open(wheel).with_context(|| format!("cannot open {} (run `trainer fetch kanjivg`)", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(file).with_context(|| format!("{} is not a zip", wheel.display()))?;
    chars
        .iter()
        .map(|&ch| {
            let name = member_name(ch);
            let mut entry = zip.by_name(&name).with_context(|| format!("{name} ({ch}) is not in {}", wheel.display()))?;
            // KanjiVG files are a few KB: a member claiming more is not KanjiVG.
            ensure!(entry.size() < 1 << 20, "{name} is {} bytes", entry.size());
            let mut text = String::new();
            entry.by_ref().take(1 << 20).read_to_string(&mut text)?;
            parse_svg(&text).with_context(|| format!("{name} ({ch})"))
        })
        .collect()
}

/// Hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Checks the wheel's hash: a different file would silently change every dataset made from it.
pub fn verify_wheel(path: &Path) -> Result<()> {
    let got = sha256_file(path).with_context(|| format!("cannot read {}", path.display()))?;
    if got != WHEEL_SHA256 {
        bail!("{} has sha256 {got}, expected {WHEEL_SHA256} (kanjivg {WHEEL_VERSION})", path.display());
    }
    Ok(())
}

/// Gets the wheel into `dir` with pip (the ordinary client for PyPI) unless a verified copy is
/// already there, and returns its path.
pub fn fetch_wheel(dir: &Path) -> Result<PathBuf> {
    let path = dir.join(WHEEL_FILE);
    if path.is_file() && verify_wheel(&path).is_ok() {
        return Ok(path);
    }
    std::fs::create_dir_all(dir)?;
    let pip = ["pip", "pip3"].into_iter().find(|p| Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success()));
    let Some(pip) = pip else { bail!("pip is not installed (apt-get install python3-pip), and {} is missing", path.display()) };
    let status = Command::new(pip)
        .args(["download", "--no-deps", "--disable-pip-version-check", "-d"])
        .arg(dir)
        .arg(format!("kanjivg=={WHEEL_VERSION}"))
        .status()
        .with_context(|| format!("cannot run {pip}"))?;
    ensure!(status.success(), "`{pip} download kanjivg=={WHEEL_VERSION}` failed ({status})");
    verify_wheel(&path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A_SVG: &str = include_str!("../../../fixtures/kanjivg/03042.svg");

    #[test]
    fn parses_the_three_strokes_of_a() {
        let strokes = parse_svg(A_SVG).unwrap();
        assert_eq!(strokes.len(), 3);
        // Stroke 1 starts at M31.01,33 and is three relative cubics.
        assert_eq!(strokes[0].len(), 3);
        assert_eq!(strokes[0][0][0], [31.01, 33.0]);
        // Relative `c` coordinates become absolute: the first curve ends at (31.01+5.25, 33+1.75).
        let end = strokes[0][0][3];
        assert!((end[0] - 36.26).abs() < 1e-4 && (end[1] - 34.75).abs() < 1e-4, "{end:?}");
        // Segments chain: each starts where the previous one ended.
        for stroke in &strokes {
            for pair in stroke.windows(2) {
                assert_eq!(pair[0][3], pair[1][0]);
            }
        }
        // Everything lies in the 109×109 box.
        assert!(strokes.iter().flatten().flatten().all(|p| (0.0..=BOX).contains(&p[0]) && (0.0..=BOX).contains(&p[1])));
    }

    #[test]
    fn lines_and_quadratics_become_equivalent_cubics() {
        let svg = r#"<svg xmlns="http://www.w3.org/2000/svg"><path d="M0,0 L30,0 Q30,30 60,30 z"/><path d="M1,1"/></svg>"#;
        let strokes = parse_svg(svg).unwrap();
        assert_eq!(strokes.len(), 1, "a path with no segment is not a stroke");
        let [line, quad] = [strokes[0][0], strokes[0][1]];
        assert_eq!(cubic_at(&line, 0.5), [15.0, 0.0]);
        // Quadratic at t=0.5: 0.25*P0 + 0.5*C + 0.25*P2.
        let mid = cubic_at(&quad, 0.5);
        assert!((mid[0] - 37.5).abs() < 1e-4 && (mid[1] - 22.5).abs() < 1e-4, "{mid:?}");
    }

    #[test]
    fn rejects_what_is_not_stroke_data() {
        assert!(parse_svg("<svg").is_err());
        assert!(parse_svg(r#"<svg xmlns="http://www.w3.org/2000/svg"></svg>"#).is_err());
        assert!(parse_svg(r#"<svg xmlns="http://www.w3.org/2000/svg"><path d="M0,0 L1"/></svg>"#).is_err());
    }

    #[test]
    fn member_names_follow_the_wheel_layout() {
        assert_eq!(member_name('あ'), "kanji/03042.svg");
        assert_eq!(member_name('ゝ'), "kanji/0309d.svg");
    }

    #[test]
    fn reads_strokes_from_a_wheel_shaped_zip_and_checks_hashes() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("kanjivg-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let wheel = dir.join("tiny.whl");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
        zip.start_file("kanji/03042.svg", zip::write::SimpleFileOptions::default()).unwrap();
        zip.write_all(A_SVG.as_bytes()).unwrap();
        zip.finish().unwrap();
        let strokes = load_from_wheel(&wheel, &['あ']).unwrap();
        assert_eq!(strokes[0].len(), 3);
        let missing = load_from_wheel(&wheel, &['い']).unwrap_err();
        assert!(format!("{missing:#}").contains("kanji/03044.svg"), "{missing:#}");
        // The tiny zip is not the pinned wheel.
        assert!(verify_wheel(&wheel).unwrap_err().to_string().contains(WHEEL_SHA256));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
