//! `trainer synth kana`: a synthetic stand-in for Kuzushiji-49, since the real set cannot be
//! downloaded everywhere. Two sources, both drawn as white ink on black like K49:
//! - handwriting: KanjiVG stroke skeletons drawn by `handwriting` (jitter, pressure, brush taper,
//!   dry-brush streaks, cursive joins) in named styles;
//! - type: the Japanese fonts on this machine (Debian `fonts-*`: brush, handwriting, mincho, gothic).
//!
//! Every image then goes through `finish`: a random affine, an elastic warp, a crop to the ink
//! and a fit into 28×28 the way K49 was made (longer side ~24–28 px, centred), blur and ink noise.
//! The test split uses font families and stroke styles the training split never saw, and its own
//! seeds, so its accuracy measures generalisation to a new hand.
//!
//! This is printed type and rendered stroke data, not the Kuzushiji (historical cursive) of K49:
//! a model trained on it is a modern-hiragana classifier, and its card says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ab_glyph::{Font, FontVec, PxScale, point};
use anyhow::{Context, Result, ensure};
use ndarray::{Array2, Array3, s};
use rand::prelude::*;
use rand::rngs::StdRng;
use rayon::prelude::*;
use serde::Serialize;

use super::Split;
use super::classes;
use super::handwriting::{self, HI, STYLES, StrokeStyle, TEST_STYLES};
use super::kanjivg::{self, Stroke};

/// A font face that has every K49 character.
pub struct KanaFont {
    pub path: PathBuf,
    /// The Debian package folder it came from (`ipafont-mincho`, `kouzan-mouhitsu`, ...): faces of
    /// one family share their kana designs, so splits hold out whole families.
    pub family: String,
    font: FontVec,
}

/// Font families only the test split uses by default: one mincho, one brush, one handwriting and
/// one gothic design with no relative in training.
pub const TEST_FONT_FAMILIES: [&str; 4] = ["hanazono", "aoyagi-soseki", "seto", "sawarabi-gothic"];

/// The 49 K49 characters in label order.
pub fn k49_chars() -> Vec<char> {
    classes::k49().iter().map(|c| c.label.chars().next().expect("one character per class")).collect()
}

/// Every font face under `dirs` (recursively; .ttf/.otf/.ttc, each face of a collection) that
/// covers all 49 characters, once each (symlinks resolved), sorted by path for determinism.
pub fn find_fonts(dirs: &[PathBuf]) -> Vec<KanaFont> {
    let chars = k49_chars();
    let mut files = Vec::new();
    for d in dirs {
        collect_font_files(d, &mut files);
    }
    let mut files: Vec<PathBuf> = files.into_iter().filter_map(|p| p.canonicalize().ok()).collect();
    files.sort();
    files.dedup();
    let mut fonts = Vec::new();
    for path in files {
        let Ok(bytes) = std::fs::read(&path) else { continue };
        let faces = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("ttc")) { 4 } else { 1 };
        let family = path.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for index in 0..faces {
            let Ok(font) = FontVec::try_from_vec_and_index(bytes.clone(), index) else { break };
            // A glyph id is not enough: some faces map a character to an empty outline.
            let drawn = |c: char| font.outline_glyph(font.glyph_id(c).with_scale(PxScale::from(32.0))).is_some();
            if chars.iter().all(|&c| font.glyph_id(c).0 != 0 && drawn(c)) {
                fonts.push(KanaFont { path: path.clone(), family: family.clone(), font });
            }
        }
    }
    fonts
}

fn collect_font_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_font_files(&p, out);
        } else if p.extension().and_then(|e| e.to_str()).is_some_and(|e| ["ttf", "otf", "ttc"].contains(&e.to_ascii_lowercase().as_str())) {
            out.push(p);
        }
    }
}

/// Coverage of `ch` on a HI×HI canvas, its larger side `size` pixels, centred.
fn render_glyph(font: &FontVec, ch: char, size: f32) -> Array2<f32> {
    let mut canvas = Array2::<f32>::zeros((HI, HI));
    let glyph = font.glyph_id(ch).with_scale_and_position(PxScale::from(size), point(0.0, 0.0));
    let Some(outlined) = font.outline_glyph(glyph) else { return canvas };
    let b = outlined.px_bounds();
    // Fit the glyph's box to `size` (fonts differ in how much of the em a kana fills).
    let fit = size / b.width().max(b.height()).max(1.0);
    let glyph = font.glyph_id(ch).with_scale_and_position(PxScale::from(size * fit), point(0.0, 0.0));
    let Some(outlined) = font.outline_glyph(glyph) else { return canvas };
    let b = outlined.px_bounds();
    let ox = ((HI as f32 - b.width()) / 2.0).round() as i64;
    let oy = ((HI as f32 - b.height()) / 2.0).round() as i64;
    outlined.draw(|x, y, c| {
        let (cx, cy) = (x as i64 + ox, y as i64 + oy);
        if (0..HI as i64).contains(&cx) && (0..HI as i64).contains(&cy) {
            canvas[[cy as usize, cx as usize]] = c.clamp(0.0, 1.0);
        }
    });
    canvas
}

/// Bilinear sample with zero outside.
fn sample(img: &Array2<f32>, x: f32, y: f32) -> f32 {
    let (h, w) = img.dim();
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let at = |xi: f32, yi: f32| {
        if xi < 0.0 || yi < 0.0 || xi >= w as f32 || yi >= h as f32 { 0.0 } else { img[[yi as usize, xi as usize]] }
    };
    at(x0, y0) * (1.0 - fx) * (1.0 - fy) + at(x0 + 1.0, y0) * fx * (1.0 - fy) + at(x0, y0 + 1.0) * (1.0 - fx) * fy + at(x0 + 1.0, y0 + 1.0) * fx * fy
}

/// 3×3 max (`dilate`: thicker strokes) or min (thinner) filter.
fn morph(img: &Array2<f32>, dilate: bool) -> Array2<f32> {
    let (h, w) = img.dim();
    Array2::from_shape_fn((h, w), |(y, x)| {
        let mut v = if dilate { 0f32 } else { 1f32 };
        for yy in y.saturating_sub(1)..=(y + 1).min(h - 1) {
            for xx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                v = if dilate { v.max(img[[yy, xx]]) } else { v.min(img[[yy, xx]]) };
            }
        }
        v
    })
}

fn ink(img: &Array2<f32>) -> f32 {
    img.iter().filter(|&&v| v > 0.5).count() as f32
}

/// One augmented 28×28 image of `ch` in a font: type is drawn thinner (brush hairlines) or
/// thicker (a K49 brush) at random.
pub fn render_font(font: &KanaFont, ch: char, rng: &mut impl Rng) -> Array2<u8> {
    let mut glyph = render_glyph(&font.font, ch, rng.random_range(50.0..58.0));
    match rng.random_range(0..6) {
        0 => {
            // Thinner, unless that erases the character (hairline mincho).
            let thin = morph(&glyph, false);
            if ink(&thin) > 0.4 * ink(&glyph) {
                glyph = thin;
            }
        }
        1 | 2 => {}
        _ => glyph = morph(&glyph, true),
    }
    finish(&glyph, rng)
}

/// Lifts the brush here and there: erases a few small discs centred on ink, so strokes break
/// the way fast or dry writing breaks them.
fn break_strokes(img: &mut Array2<f32>, rng: &mut impl Rng) {
    let inked: Vec<(usize, usize)> = img.indexed_iter().filter(|(_, v)| **v > 0.5).map(|(p, _)| p).collect();
    if inked.is_empty() {
        return;
    }
    let (h, w) = img.dim();
    for _ in 0..rng.random_range(1..4) {
        let (cy, cx) = inked[rng.random_range(0..inked.len())];
        let r = rng.random_range(1.5f32..3.5);
        let reach = r.ceil() as usize;
        for y in cy.saturating_sub(reach)..=(cy + reach).min(h - 1) {
            for x in cx.saturating_sub(reach)..=(cx + reach).min(w - 1) {
                let d = ((y as f32 - cy as f32).powi(2) + (x as f32 - cx as f32).powi(2)).sqrt();
                img[[y, x]] *= (d - r + 0.5).clamp(0.0, 1.0);
            }
        }
    }
}

/// One handwritten 28×28 image from a character's strokes.
pub fn render_strokes(strokes: &[Stroke], style: &StrokeStyle, rng: &mut impl Rng) -> Array2<u8> {
    finish(&handwriting::render(strokes, style, rng), rng)
}

/// Turns a HI×HI coverage canvas into a K49-looking 28×28 image: sometimes broken strokes, a
/// random affine and elastic warp, crop to the ink, fit the longer side to 24–28 px and centre,
/// blur, ink level and noise.
pub fn finish(coverage: &Array2<f32>, rng: &mut impl Rng) -> Array2<u8> {
    let mut broken;
    let coverage = if rng.random_bool(0.25) {
        broken = coverage.clone();
        break_strokes(&mut broken, rng);
        &broken
    } else {
        coverage
    };
    let n = coverage.nrows() as f32;
    let c = n / 2.0;
    // Inverse affine about the centre: rotation, shear, anisotropic scale.
    let (theta, shear) = (rng.random_range(-0.2f32..0.2), rng.random_range(-0.25f32..0.25));
    let (sx, sy) = (rng.random_range(0.8f32..1.2), rng.random_range(0.8f32..1.2));
    let (cos, sin) = (theta.cos(), theta.sin());
    let a = [[cos * sx, (cos * shear - sin) * sy], [sin * sx, (sin * shear + cos) * sy]];
    let det = a[0][0] * a[1][1] - a[0][1] * a[1][0];
    let inv = [[a[1][1] / det, -a[0][1] / det], [-a[1][0] / det, a[0][0] / det]];
    // Elastic warp: a smooth random displacement field (two low-frequency waves per axis).
    let amp = rng.random_range(0.0f32..2.5);
    let mut wave = || (rng.random_range(0.5f32..1.5), rng.random_range(0.5f32..1.5), rng.random_range(0.0..std::f32::consts::TAU));
    let (wx, wy) = ([wave(), wave()], [wave(), wave()]);
    let field = |ws: &[(f32, f32, f32); 2], x: f32, y: f32| {
        ws.iter().map(|(fx, fy, ph)| (std::f32::consts::TAU * (fx * x + fy * y) / n + ph).sin()).sum::<f32>() * amp / 2.0
    };
    let warped = Array2::from_shape_fn(coverage.dim(), |(y, x)| {
        let (x, y) = (x as f32 + 0.5, y as f32 + 0.5);
        let (u, v) = (x - c + field(&wx, x, y), y - c + field(&wy, x, y));
        sample(coverage, inv[0][0] * u + inv[0][1] * v + c - 0.5, inv[1][0] * u + inv[1][1] * v + c - 0.5)
    });
    let Some((x0, y0, x1, y1)) = ink_box(&warped, 0.15) else { return Array2::zeros((28, 28)) };
    let (bw, bh) = ((x1 - x0) as f32, (y1 - y0) as f32);
    let scale = rng.random_range(24.0f32..28.0) / bw.max(bh);
    let (ow, oh) = (bw * scale, bh * scale);
    let jitter = |room: f32, rng: &mut dyn RngCore| if room > 0.5 { rng.random_range(-room.min(1.0)..room.min(1.0)) } else { 0.0 };
    let ox = (28.0 - ow) / 2.0 + jitter((28.0 - ow) / 2.0, rng);
    let oy = (28.0 - oh) / 2.0 + jitter((28.0 - oh) / 2.0, rng);
    // Area-like resampling: 3×3 bilinear samples per output pixel.
    let mut small = Array2::from_shape_fn((28, 28), |(y, x)| {
        let mut acc = 0.0;
        for sy in 0..3 {
            for sx in 0..3 {
                let px = x0 as f32 + (x as f32 + (sx as f32 + 0.5) / 3.0 - ox) / scale - 0.5;
                let py = y0 as f32 + (y as f32 + (sy as f32 + 0.5) / 3.0 - oy) / scale - 0.5;
                acc += sample(&warped, px, py);
            }
        }
        acc / 9.0
    });
    let sigma = rng.random_range(0.0f32..0.6);
    if sigma > 0.2 {
        small = blur3(&small, (-1.0 / (2.0 * sigma * sigma)).exp());
    }
    // K49 ink is near-saturated white: a gain over 1 then a clip, a peak level, noise on the ink.
    let gain = rng.random_range(1.1f32..1.8);
    let peak = rng.random_range(210.0f32..255.0);
    let noise = rng.random_range(0.0f32..12.0);
    small.mapv(|v| {
        // Like K49's scans, the faint halo around the ink is black, not a grey fog.
        let v = if v < 0.06 { 0.0 } else { (v * gain).min(1.0) };
        let n = if v > 0.05 {
            let (u1, u2): (f32, f32) = (rng.random_range(1e-6..1.0), rng.random());
            (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos() * noise
        } else {
            0.0
        };
        (v * peak + n).round().clamp(0.0, 255.0) as u8
    })
}

/// Bounding box (x0, y0, x1, y1), end-exclusive, of pixels above `threshold`.
fn ink_box(img: &Array2<f32>, threshold: f32) -> Option<(usize, usize, usize, usize)> {
    let mut b: Option<(usize, usize, usize, usize)> = None;
    for ((y, x), &v) in img.indexed_iter() {
        if v > threshold {
            b = Some(match b {
                None => (x, y, x + 1, y + 1),
                Some((x0, y0, x1, y1)) => (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1)),
            });
        }
    }
    b
}

/// Separable 3-tap blur with side weight `w` (centre 1), edges clamped.
fn blur3(img: &Array2<f32>, w: f32) -> Array2<f32> {
    let (h, wd) = img.dim();
    let norm = 1.0 + 2.0 * w;
    let rows = Array2::from_shape_fn((h, wd), |(y, x)| {
        (img[[y, x.saturating_sub(1)]] * w + img[[y, x]] + img[[y, (x + 1).min(wd - 1)]] * w) / norm
    });
    Array2::from_shape_fn((h, wd), |(y, x)| {
        (rows[[y.saturating_sub(1), x]] * w + rows[[y, x]] + rows[[(y + 1).min(h - 1), x]] * w) / norm
    })
}

/// What one split draws from: whole font families and whole stroke styles.
#[derive(Clone, Debug, Serialize)]
pub struct SplitPlan {
    pub font_families: Vec<String>,
    pub styles: Vec<String>,
}

/// Divides the installed families and the stroke styles between the splits: `test_families`
/// (those installed) and `TEST_STYLES` go to test only, the rest to train only.
pub fn plan_splits(fonts: &[KanaFont], test_families: &[String]) -> Result<(SplitPlan, SplitPlan)> {
    let mut families: Vec<String> = fonts.iter().map(|f| f.family.clone()).collect();
    families.sort();
    families.dedup();
    let (test, train): (Vec<String>, Vec<String>) = families.into_iter().partition(|f| test_families.contains(f));
    let (test_styles, train_styles): (Vec<&StrokeStyle>, Vec<&StrokeStyle>) = STYLES.iter().partition(|s| TEST_STYLES.contains(&s.name));
    let names = |v: Vec<&StrokeStyle>| v.into_iter().map(|s| s.name.to_string()).collect();
    Ok((SplitPlan { font_families: train, styles: names(train_styles) }, SplitPlan { font_families: test, styles: names(test_styles) }))
}

#[derive(Clone, Debug)]
pub struct SynthOptions {
    pub train_per_class: usize,
    pub test_per_class: usize,
    pub seed: u64,
    /// Share of images drawn from strokes (the rest from fonts) when both sources exist.
    pub stroke_fraction: f64,
    pub test_font_families: Vec<String>,
}

/// What was written, for the caller and for `<prefix>-dataset.json`.
#[derive(Clone, Debug, Serialize)]
pub struct SynthReport {
    pub description: String,
    pub attribution: String,
    pub train: SplitReport,
    pub test: SplitReport,
}

#[derive(Clone, Debug, Serialize)]
pub struct SplitReport {
    pub images: usize,
    pub stroke_images: usize,
    pub font_images: usize,
    pub seed: u64,
    pub plan: SplitPlan,
    /// Font files per family used by this split.
    pub fonts: BTreeMap<String, Vec<String>>,
}

enum Source<'a> {
    Font(&'a KanaFont),
    Strokes(&'static StrokeStyle),
}

/// Renders both splits into `out` as `<prefix>-{train,test}-{imgs,labels}.npz` plus
/// `<prefix>-classmap.csv`, `<prefix>-dataset.json` and `<prefix>-README.md`.
/// `strokes[class]` are KanjiVG strokes in K49 label order (None: fonts only).
pub fn synthesize(fonts: &[KanaFont], strokes: Option<&[Vec<Stroke>]>, out: &Path, prefix: &str, opts: &SynthOptions) -> Result<SynthReport> {
    let chars = k49_chars();
    ensure!(strokes.is_none_or(|s| s.len() == chars.len()), "need strokes for all 49 classes");
    let (train_plan, test_plan) = plan_splits(fonts, &opts.test_font_families)?;
    let stroke_fraction = match strokes {
        None => 0.0,
        Some(_) if fonts.is_empty() => 1.0,
        Some(_) => opts.stroke_fraction,
    };
    ensure!(stroke_fraction > 0.0 || !fonts.is_empty(), "no font with all 49 hiragana found (cargo xtask setup installs them) and no stroke data");
    for (split, plan) in [("train", &train_plan), ("test", &test_plan)] {
        ensure!(stroke_fraction == 1.0 || !plan.font_families.is_empty(), "no font family left for the {split} split");
    }
    std::fs::create_dir_all(out)?;
    let mut reports = Vec::new();
    for (split, per_class, plan, seed) in [
        (Split::Train, opts.train_per_class, &train_plan, opts.seed),
        (Split::Test, opts.test_per_class, &test_plan, opts.seed ^ 0x5eed_7e57),
    ] {
        let families: Vec<Vec<&KanaFont>> =
            plan.font_families.iter().map(|fam| fonts.iter().filter(|f| &f.family == fam).collect()).collect();
        let styles: Vec<&'static StrokeStyle> = plan.styles.iter().filter_map(|n| handwriting::style(n)).collect();
        let n = per_class * chars.len();
        // One generator per image (seeded by split seed and index): deterministic in parallel.
        let rendered: Vec<(Array2<u8>, bool)> = (0..n)
            .into_par_iter()
            .map(|i| {
                let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(i as u64));
                let class = i % chars.len();
                let source = if rng.random_bool(stroke_fraction) {
                    Source::Strokes(styles[rng.random_range(0..styles.len())])
                } else {
                    let family = &families[rng.random_range(0..families.len())];
                    Source::Font(family[rng.random_range(0..family.len())])
                };
                match source {
                    Source::Strokes(style) => (render_strokes(&strokes.expect("stroke share is 0 without strokes")[class], style, &mut rng), true),
                    Source::Font(font) => (render_font(font, chars[class], &mut rng), false),
                }
            })
            .collect();
        let mut images = Array3::<u8>::zeros((n, 28, 28));
        for (i, (img, _)) in rendered.iter().enumerate() {
            images.slice_mut(s![i, .., ..]).assign(img);
        }
        let labels: Vec<u8> = (0..n).map(|i| (i % chars.len()) as u8).collect();
        super::npz::write_pair(out, prefix, split, &images, &labels).with_context(|| format!("writing {}", out.display()))?;
        let stroke_images = rendered.iter().filter(|(_, s)| *s).count();
        let font_files = |fam: &String| fonts.iter().filter(|f| &f.family == fam).map(|f| f.path.display().to_string()).collect();
        reports.push(SplitReport {
            images: n,
            stroke_images,
            font_images: n - stroke_images,
            seed,
            plan: plan.clone(),
            fonts: plan.font_families.iter().map(|fam| (fam.clone(), font_files(fam))).collect(),
        });
    }
    let test = reports.pop().expect("two splits");
    let train = reports.pop().expect("two splits");
    let report = SynthReport {
        description: format!(
            "synthetic hiragana (the 49 K49 classes), not real Kuzushiji: {:.0}% KanjiVG strokes drawn by the handwriting renderer, \
             the rest printed in Debian Japanese fonts; white on black, 28x28. The test split uses font families ({}) and stroke \
             styles ({}) that training never saw.",
            stroke_fraction * 100.0,
            test.plan.font_families.join(", "),
            test.plan.styles.join(", "),
        ),
        attribution: if strokes.is_some() { kanjivg::ATTRIBUTION.to_string() } else { String::new() },
        train,
        test,
    };
    std::fs::write(out.join(format!("{prefix}-classmap.csv")), classes::K49_CLASSMAP)?;
    std::fs::write(out.join(format!("{prefix}-dataset.json")), serde_json::to_string_pretty(&report)?)?;
    std::fs::write(out.join(format!("{prefix}-README.md")), readme(&report))?;
    Ok(report)
}

/// The dataset's README: what it is, where it comes from, and which fonts and styles each split uses.
pub fn readme(r: &SynthReport) -> String {
    let split = |name: &str, s: &SplitReport| {
        let fonts: String = s.fonts.iter().map(|(fam, files)| format!("  - {fam}: {}\n", files.join(", "))).collect();
        format!(
            "## {name}: {} images ({} stroke-rendered, {} from fonts), seed {}\n- stroke styles: {}\n- font families:\n{fonts}\n",
            s.images,
            s.stroke_images,
            s.font_images,
            s.seed,
            s.plan.styles.join(", "),
        )
    };
    format!(
        "# Synthetic hiragana (K49 layout)\n\n{}\n\n{}\n\n{}{}",
        r.description,
        if r.attribution.is_empty() { "No stroke data was used." } else { &r.attribution },
        split("train", &r.train),
        split("test", &r.test),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fonts() -> Vec<KanaFont> {
        find_fonts(&[PathBuf::from("/usr/share/fonts")])
    }

    fn a_strokes() -> Vec<Stroke> {
        kanjivg::parse_svg(include_str!("../../../fixtures/kanjivg/03042.svg")).unwrap()
    }

    #[test]
    fn stroke_renders_are_deterministic_k49_like_images() {
        let strokes = a_strokes();
        for style in &STYLES {
            let img = render_strokes(&strokes, style, &mut StdRng::seed_from_u64(3));
            assert_eq!(img, render_strokes(&strokes, style, &mut StdRng::seed_from_u64(3)), "{}", style.name);
            assert_ne!(img, render_strokes(&strokes, style, &mut StdRng::seed_from_u64(4)), "{}", style.name);
            // Fitted like K49: the ink's longer side spans 22–28 of the 28 pixels.
            let f = img.mapv(|v| v as f32 / 255.0);
            let (x0, y0, x1, y1) = ink_box(&f, 0.2).expect("ink");
            assert!((22..=28).contains(&(x1 - x0).max(y1 - y0)), "{}: box {:?}", style.name, (x0, y0, x1, y1));
            let ink = img.iter().filter(|&&p| p > 128).count();
            assert!((40..450).contains(&ink), "{}: {ink} bright pixels", style.name);
            assert!(img.iter().any(|&p| p >= 200), "{}: ink reaches near white", style.name);
        }
    }

    #[test]
    fn renders_white_on_black_font_glyphs() {
        let fonts = fonts();
        if fonts.is_empty() {
            eprintln!("skipping: no Japanese font installed");
            return;
        }
        let mut rng = StdRng::seed_from_u64(1);
        let img = render_font(&fonts[0], 'あ', &mut rng);
        let ink = img.iter().filter(|&&p| p > 64).count();
        assert!((40..600).contains(&ink), "{ink} ink pixels");
        assert_eq!(img, render_font(&fonts[0], 'あ', &mut StdRng::seed_from_u64(1)));
        assert_ne!(img, render_font(&fonts[0], 'い', &mut StdRng::seed_from_u64(1)));
    }

    #[test]
    fn splits_share_no_font_family_and_no_style() {
        let fonts = fonts();
        let test_families: Vec<String> = TEST_FONT_FAMILIES.iter().map(|s| s.to_string()).collect();
        let (train, test) = plan_splits(&fonts, &test_families).unwrap();
        assert!(train.styles.iter().all(|s| !test.styles.contains(s)));
        assert_eq!(test.styles.len(), TEST_STYLES.len());
        assert!(train.font_families.iter().all(|f| !test.font_families.contains(f)));
        assert!(test.font_families.iter().all(|f| test_families.contains(f)));
        // Every installed family is in exactly one split.
        let mut all: Vec<String> = fonts.iter().map(|f| f.family.clone()).collect();
        all.sort();
        all.dedup();
        assert_eq!(train.font_families.len() + test.font_families.len(), all.len());
    }

    #[test]
    fn writes_a_loadable_k49_layout_pair_from_strokes() {
        let dir = std::env::temp_dir().join(format!("kana-synth-{}", std::process::id()));
        // Stroke data for all 49 classes stands in as あ's strokes: the layout is what is tested.
        let strokes = vec![a_strokes(); 49];
        let opts = SynthOptions { train_per_class: 2, test_per_class: 1, seed: 3, stroke_fraction: 1.0, test_font_families: vec![] };
        let report = synthesize(&[], Some(&strokes), &dir, "kana", &opts).unwrap();
        assert_eq!((report.train.stroke_images, report.test.stroke_images), (98, 49));
        let ds = super::super::Source::parse(&format!("npz:{}/kana", dir.display())).unwrap().load(Split::Train).unwrap();
        assert_eq!(ds.len(), 98);
        assert_eq!(ds.num_classes(), 49);
        assert_eq!(ds.classes[0].label, "あ");
        assert_eq!(ds.class_counts(), vec![2; 49]);
        let test = super::super::Source::parse(&format!("npz:{}/kana", dir.display())).unwrap().load(Split::Test).unwrap();
        // Test images come from held-out styles and other seeds: none equals a training image.
        for t in test.images.outer_iter() {
            assert!(ds.images.outer_iter().all(|tr| tr != t));
        }
        let readme = std::fs::read_to_string(dir.join("kana-README.md")).unwrap();
        assert!(readme.contains("cursive-brush") && readme.contains("KanjiVG"), "{readme}");
        // Same options, same files.
        let again = dir.join("again");
        synthesize(&[], Some(&strokes), &again, "kana", &opts).unwrap();
        for f in ["kana-train-imgs.npz", "kana-test-imgs.npz"] {
            assert_eq!(std::fs::read(dir.join(f)).unwrap(), std::fs::read(again.join(f)).unwrap(), "{f}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
