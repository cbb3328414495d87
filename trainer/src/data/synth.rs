//! `trainer synth kana`: a synthetic stand-in for Kuzushiji-49 rendered from the Japanese fonts
//! on this machine (Debian `fonts-*`: brush, handwriting, mincho and gothic faces). Each image is
//! one of the 49 K49 classes, randomly rotated / sheared / scaled / shifted, with stroke-width
//! changes and noise, 28×28, white on black like K49, written as a K49-layout npz pair.
//!
//! It is printed type, not the handwritten cursive of K49: a model trained on it is a hiragana
//! classifier, not a Kuzushiji reader, and its card must say so.

use std::path::{Path, PathBuf};

use ab_glyph::{Font, FontVec, PxScale, point};
use anyhow::{Context, Result, ensure};
use ndarray::{Array2, Array3, s};
use rand::prelude::*;
use rand::rngs::StdRng;

use super::Split;
use super::classes;

/// Rendering resolution before the 2× box downsample to 28×28 (anti-aliasing).
const HI: usize = 56;

/// A font that has every K49 character.
pub struct KanaFont {
    pub path: PathBuf,
    font: FontVec,
}

/// The 49 K49 characters in label order.
pub fn k49_chars() -> Vec<char> {
    classes::k49().iter().map(|c| c.label.chars().next().expect("one character per class")).collect()
}

/// Every font file under `dirs` (recursively; .ttf/.otf/.ttc, each face of a collection) that
/// covers all 49 characters, sorted by path for determinism.
pub fn find_fonts(dirs: &[PathBuf]) -> Vec<KanaFont> {
    let chars = k49_chars();
    let mut files = Vec::new();
    for d in dirs {
        collect_font_files(d, &mut files);
    }
    files.sort();
    let mut fonts = Vec::new();
    for path in files {
        let Ok(bytes) = std::fs::read(&path) else { continue };
        let faces = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("ttc")) { 4 } else { 1 };
        for index in 0..faces {
            let Ok(font) = FontVec::try_from_vec_and_index(bytes.clone(), index) else { break };
            if chars.iter().all(|&c| font.glyph_id(c).0 != 0) {
                fonts.push(KanaFont { path: path.clone(), font });
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

/// Coverage of `ch` in [0, 1], centred on a HI×HI canvas with its larger side `size` pixels.
fn render_glyph(font: &FontVec, ch: char, size: f32) -> Array2<f32> {
    let mut canvas = Array2::<f32>::zeros((HI, HI));
    let glyph = font.glyph_id(ch).with_scale_and_position(PxScale::from(size), point(0.0, 0.0));
    let Some(outlined) = font.outline_glyph(glyph) else { return canvas };
    let b = outlined.px_bounds();
    let (w, h) = (b.width().max(1.0), b.height().max(1.0));
    // Fit the glyph's box to `size` (fonts differ in how much of the em a kana fills).
    let fit = size / w.max(h);
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
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let at = |xi: f32, yi: f32| {
        if xi < 0.0 || yi < 0.0 || xi >= HI as f32 || yi >= HI as f32 { 0.0 } else { img[[yi as usize, xi as usize]] }
    };
    at(x0, y0) * (1.0 - fx) * (1.0 - fy) + at(x0 + 1.0, y0) * fx * (1.0 - fy) + at(x0, y0 + 1.0) * (1.0 - fx) * fy + at(x0 + 1.0, y0 + 1.0) * fx * fy
}

/// 3×3 max (dilate = thicker strokes) or min (erode = thinner) filter.
fn morph(img: &Array2<f32>, dilate: bool) -> Array2<f32> {
    Array2::from_shape_fn((HI, HI), |(y, x)| {
        let mut v = if dilate { 0f32 } else { 1f32 };
        for dy in -1i64..=1 {
            for dx in -1i64..=1 {
                let (yy, xx) = (y as i64 + dy, x as i64 + dx);
                let p = if (0..HI as i64).contains(&yy) && (0..HI as i64).contains(&xx) { img[[yy as usize, xx as usize]] } else { 0.0 };
                v = if dilate { v.max(p) } else { v.min(p) };
            }
        }
        v
    })
}

/// One augmented 28×28 image of `ch`.
pub fn render(font: &KanaFont, ch: char, rng: &mut impl Rng) -> Array2<u8> {
    let glyph = render_glyph(&font.font, ch, rng.random_range(40.0..50.0));
    // Inverse affine about the centre: rotation, shear, anisotropic scale, shift.
    let (theta, shear) = (rng.random_range(-0.22f32..0.22), rng.random_range(-0.2f32..0.2));
    let (sx, sy) = (rng.random_range(0.85f32..1.12), rng.random_range(0.85f32..1.12));
    let (tx, ty) = (rng.random_range(-3.0f32..3.0), rng.random_range(-3.0f32..3.0));
    let (cos, sin) = (theta.cos(), theta.sin());
    // Forward A = R · Sh · S; inverse computed directly.
    let a = [[cos * sx, (cos * shear - sin) * sy], [sin * sx, (sin * shear + cos) * sy]];
    let det = a[0][0] * a[1][1] - a[0][1] * a[1][0];
    let inv = [[a[1][1] / det, -a[0][1] / det], [-a[1][0] / det, a[0][0] / det]];
    let c = HI as f32 / 2.0;
    let mut warped = Array2::from_shape_fn((HI, HI), |(y, x)| {
        let (u, v) = (x as f32 + 0.5 - c - tx, y as f32 + 0.5 - c - ty);
        let (sx_, sy_) = (inv[0][0] * u + inv[0][1] * v + c - 0.5, inv[1][0] * u + inv[1][1] * v + c - 0.5);
        sample(&glyph, sx_, sy_)
    });
    match rng.random_range(0..10) {
        0..=2 => warped = morph(&warped, true),
        3 => warped = morph(&warped, false),
        _ => {}
    }
    let peak = rng.random_range(200.0f32..255.0);
    let noise = rng.random_range(0.0f32..10.0);
    Array2::from_shape_fn((28, 28), |(y, x)| {
        let v = warped.slice(s![2 * y..2 * y + 2, 2 * x..2 * x + 2]).sum() / 4.0;
        // Box–Muller noise on the ink only, so the background stays black like K49.
        let n = if v > 0.05 {
            let (u1, u2): (f32, f32) = (rng.random_range(1e-6..1.0), rng.random());
            (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos() * noise
        } else {
            0.0
        };
        (v * peak + n).round().clamp(0.0, 255.0) as u8
    })
}

#[derive(Clone, Debug)]
pub struct SynthOptions {
    pub train_per_class: usize,
    pub test_per_class: usize,
    pub seed: u64,
}

/// Renders both splits into `out` as `<prefix>-{train,test}-{imgs,labels}.npz` plus
/// `<prefix>-classmap.csv` and `<prefix>-fonts.txt`. Fonts are split too: the test split uses
/// fonts the training split never saw when there are at least 3, so test accuracy measures
/// generalisation to a new hand, not memorised glyphs.
pub fn synthesize(fonts: &[KanaFont], out: &Path, prefix: &str, opts: &SynthOptions) -> Result<Vec<(Split, usize)>> {
    ensure!(!fonts.is_empty(), "no font with all 49 hiragana found (apt-get install fonts-ipafont-mincho fonts-aoyagi-soseki ...)");
    let (train_fonts, test_fonts): (Vec<&KanaFont>, Vec<&KanaFont>) = if fonts.len() >= 3 {
        // Every 4th font (at least one) is held out for the test split.
        let (test, train): (Vec<_>, Vec<_>) = fonts.iter().enumerate().partition(|(i, _)| i % 4 == 1);
        (train.into_iter().map(|(_, f)| f).collect(), test.into_iter().map(|(_, f)| f).collect())
    } else {
        (fonts.iter().collect(), fonts.iter().collect())
    };
    let chars = k49_chars();
    std::fs::create_dir_all(out)?;
    let mut written = Vec::new();
    for (split, per_class, pool, seed) in [
        (Split::Train, opts.train_per_class, &train_fonts, opts.seed),
        (Split::Test, opts.test_per_class, &test_fonts, opts.seed ^ 0x5eed),
    ] {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = per_class * chars.len();
        let mut images = Array3::<u8>::zeros((n, 28, 28));
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let class = i % chars.len();
            let font = pool[rng.random_range(0..pool.len())];
            images.slice_mut(s![i, .., ..]).assign(&render(font, chars[class], &mut rng));
            labels.push(class as u8);
        }
        super::npz::write_pair(out, prefix, split, &images, &labels).with_context(|| format!("writing {}", out.display()))?;
        written.push((split, n));
    }
    std::fs::write(out.join(format!("{prefix}-classmap.csv")), classes::K49_CLASSMAP)?;
    let list = |fs: &[&KanaFont]| fs.iter().map(|f| format!("  {}\n", f.path.display())).collect::<String>();
    std::fs::write(
        out.join(format!("{prefix}-fonts.txt")),
        format!("train fonts:\n{}test fonts:\n{}", list(train_fonts.as_slice()), list(test_fonts.as_slice())),
    )?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fonts() -> Vec<KanaFont> {
        find_fonts(&[PathBuf::from("/usr/share/fonts")])
    }

    #[test]
    fn renders_white_on_black_centred_glyphs() {
        let fonts = fonts();
        if fonts.is_empty() {
            eprintln!("skipping: no Japanese font installed");
            return;
        }
        let mut rng = StdRng::seed_from_u64(1);
        let img = render(&fonts[0], 'あ', &mut rng);
        let ink = img.iter().filter(|&&p| p > 64).count();
        assert!((40..500).contains(&ink), "{ink} ink pixels");
        // Black border like K49 (the glyph is centred with a margin).
        assert!(img.row(0).iter().chain(img.row(27).iter()).all(|&p| p < 64));
        let again = render(&fonts[0], 'あ', &mut StdRng::seed_from_u64(1));
        assert_eq!(img, again);
        assert_ne!(img, render(&fonts[0], 'い', &mut StdRng::seed_from_u64(1)));
    }

    #[test]
    fn writes_a_loadable_k49_layout_pair() {
        let fonts = fonts();
        if fonts.is_empty() {
            eprintln!("skipping: no Japanese font installed");
            return;
        }
        let dir = std::env::temp_dir().join(format!("kana-synth-{}", std::process::id()));
        let opts = SynthOptions { train_per_class: 2, test_per_class: 1, seed: 3 };
        synthesize(&fonts[..1], &dir, "kana", &opts).unwrap();
        let ds = super::super::Source::parse(&format!("npz:{}/kana", dir.display())).unwrap().load(Split::Train).unwrap();
        assert_eq!(ds.len(), 98);
        assert_eq!(ds.num_classes(), 49);
        assert_eq!(ds.classes[0].label, "あ");
        assert_eq!(ds.class_counts(), vec![2; 49]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
