//! The handwriting renderer: draws KanjiVG stroke skeletons the way a hand would, on a HI×HI
//! coverage canvas that `synth::finish` turns into a K49-looking 28×28 image.
//!
//! Per stroke: the control points are jittered, the width follows a pressure profile (a brush
//! presses in and tapers out), dry-brush stretches split into bristle streaks, and the pen
//! sometimes carries on from one stroke's end to the next one's start (a cursive join). Styles are
//! named presets of those knobs so a dataset can hold whole styles out of training.

use ndarray::Array2;
use rand::Rng;

use super::kanjivg::{BOX, Cubic, Point, Stroke, cubic_at};

/// Working canvas side; the 109-unit KanjiVG box maps onto it with a small margin.
pub const HI: usize = 64;
const MARGIN: f32 = 4.0;
const UNIT: f32 = (HI as f32 - 2.0 * MARGIN) / BOX;

/// One way of writing. Widths are radii in canvas pixels (a K49 stroke is ~2–3 px wide at 28×28;
/// these radii give about K49's share of inked pixels once `synth::finish` fits the character).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StrokeStyle {
    pub name: &'static str,
    pub radius: (f32, f32),
    /// 0: even pen; 1: a brush that presses in and lifts off to a point.
    pub taper: f32,
    /// Amplitude of slow width changes along a stroke.
    pub pressure: f32,
    /// Chance per stroke of a dry-brush stretch (the ink splits into streaks).
    pub dry: f32,
    /// Chance that the pen joins this stroke's end to the next stroke's start.
    pub join: f32,
    /// Control-point jitter in KanjiVG units (of 109).
    pub jitter: f32,
}

/// Every style, by name. `synth` holds some of them out of training (see `TEST_STYLES`).
pub const STYLES: [StrokeStyle; 8] = [
    StrokeStyle { name: "pen", radius: (1.5, 2.1), taper: 0.1, pressure: 0.1, dry: 0.0, join: 0.0, jitter: 2.0 },
    StrokeStyle { name: "marker", radius: (2.2, 3.2), taper: 0.0, pressure: 0.05, dry: 0.0, join: 0.1, jitter: 2.5 },
    StrokeStyle { name: "brush", radius: (2.0, 2.8), taper: 0.8, pressure: 0.3, dry: 0.1, join: 0.1, jitter: 2.5 },
    StrokeStyle { name: "dry-brush", radius: (2.1, 3.0), taper: 0.7, pressure: 0.3, dry: 0.6, join: 0.1, jitter: 2.5 },
    StrokeStyle { name: "cursive-pen", radius: (1.5, 2.2), taper: 0.2, pressure: 0.15, dry: 0.0, join: 0.6, jitter: 3.5 },
    StrokeStyle { name: "fine-pen", radius: (1.0, 1.5), taper: 0.1, pressure: 0.1, dry: 0.0, join: 0.2, jitter: 2.0 },
    StrokeStyle { name: "cursive-brush", radius: (2.0, 2.8), taper: 0.8, pressure: 0.35, dry: 0.2, join: 0.6, jitter: 3.5 },
    StrokeStyle { name: "sloppy-marker", radius: (2.0, 2.7), taper: 0.3, pressure: 0.2, dry: 0.1, join: 0.35, jitter: 5.0 },
];

/// Styles only the test split uses: they recombine the training styles' knobs in ways training
/// never saw (a brush that joins strokes; a fast, loose marker).
pub const TEST_STYLES: [&str; 2] = ["cursive-brush", "sloppy-marker"];

pub fn style(name: &str) -> Option<&'static StrokeStyle> {
    STYLES.iter().find(|s| s.name == name)
}

/// Coverage in [0, 1] of one handwritten character on a HI×HI canvas.
pub fn render(strokes: &[Stroke], style: &StrokeStyle, rng: &mut impl Rng) -> Array2<f32> {
    let mut canvas = Array2::<f32>::zeros((HI, HI));
    let radius = rng.random_range(style.radius.0..style.radius.1);
    let strokes: Vec<Stroke> = strokes.iter().map(|s| jitter(s, style.jitter, rng)).collect();
    for (i, stroke) in strokes.iter().enumerate() {
        draw_stroke(&mut canvas, stroke, radius * rng.random_range(0.85..1.15), style, rng);
        if let Some(next) = strokes.get(i + 1)
            && rng.random::<f32>() < style.join
        {
            let join = join_curve(stroke, next, rng);
            draw_stroke(&mut canvas, &vec![join], radius * rng.random_range(0.3..0.6), &StrokeStyle { taper: 0.0, dry: 0.0, ..*style }, rng);
        }
    }
    canvas
}

/// Moves the whole stroke a little and each control point a little more, keeping segments chained.
fn jitter(stroke: &Stroke, amount: f32, rng: &mut impl Rng) -> Stroke {
    let mut shift = || [rng.random_range(-amount..=amount), rng.random_range(-amount..=amount)];
    let whole = shift();
    let add = |p: Point, d: Point| [p[0] + d[0] + whole[0], p[1] + d[1] + whole[1]];
    let mut out = Stroke::with_capacity(stroke.len());
    let mut start = add(stroke[0][0], shift());
    for c in stroke {
        let end = add(c[3], shift());
        out.push([start, add(c[1], shift()), add(c[2], shift()), end]);
        start = end;
    }
    out
}

/// A curve from the end of `a` to the start of `b` that leaves along `a`'s direction and arrives
/// along `b`'s: the pen's path when it does not lift.
fn join_curve(a: &Stroke, b: &Stroke, rng: &mut impl Rng) -> Cubic {
    let last = a[a.len() - 1];
    let first = b[0];
    let (p0, p3) = (last[3], first[0]);
    let reach = rng.random_range(0.2..0.45) * dist(p0, p3).max(8.0);
    let out_dir = unit(sub(last[3], last[2]));
    let in_dir = unit(sub(first[1], first[0]));
    [p0, [p0[0] + out_dir[0] * reach, p0[1] + out_dir[1] * reach], [p3[0] - in_dir[0] * reach, p3[1] - in_dir[1] * reach], p3]
}

fn sub(a: Point, b: Point) -> Point {
    [a[0] - b[0], a[1] - b[1]]
}

fn dist(a: Point, b: Point) -> f32 {
    let d = sub(a, b);
    (d[0] * d[0] + d[1] * d[1]).sqrt()
}

fn unit(v: Point) -> Point {
    let n = (v[0] * v[0] + v[1] * v[1]).sqrt();
    if n < 1e-6 { [0.0, 0.0] } else { [v[0] / n, v[1] / n] }
}

/// Points along the stroke in canvas pixels, about half a pixel apart.
fn flatten(stroke: &Stroke) -> Vec<Point> {
    let to_canvas = |p: Point| [MARGIN + p[0] * UNIT, MARGIN + p[1] * UNIT];
    let mut points = vec![to_canvas(stroke[0][0])];
    for c in stroke {
        // The control polygon bounds the curve's length.
        let polygon = (dist(c[0], c[1]) + dist(c[1], c[2]) + dist(c[2], c[3])) * UNIT;
        let steps = (polygon / 0.5).ceil().max(1.0) as usize;
        points.extend((1..=steps).map(|k| to_canvas(cubic_at(c, k as f32 / steps as f32))));
    }
    points
}

fn draw_stroke(canvas: &mut Array2<f32>, stroke: &Stroke, radius: f32, style: &StrokeStyle, rng: &mut impl Rng) {
    let points = flatten(stroke);
    let n = points.len();
    let phase = rng.random_range(0.0..std::f32::consts::TAU);
    let waves = rng.random_range(0.5f32..2.0);
    // Brush: the press-in and lift-off lengths, as fractions of the stroke.
    let (press, lift) = (rng.random_range(0.03f32..0.12), rng.random_range(0.15f32..0.45));
    let dry = (rng.random::<f32>() < style.dry).then(|| {
        let start = rng.random_range(0.2f32..0.8);
        (start, (start + rng.random_range(0.15f32..0.4)).min(1.0))
    });
    for (k, &p) in points.iter().enumerate() {
        let s = if n > 1 { k as f32 / (n - 1) as f32 } else { 0.5 };
        let wave = 1.0 + style.pressure * (std::f32::consts::TAU * waves * s + phase).sin();
        let taper_in = (s / press).min(1.0).sqrt();
        let taper_out = ((1.0 - s) / lift).min(1.0).sqrt();
        let shape = 1.0 - style.taper * (1.0 - (0.55 + 0.45 * taper_in) * (0.25 + 0.75 * taper_out));
        let r = (radius * wave * shape).max(0.5);
        match dry {
            Some((a, b)) if (a..=b).contains(&s) => {
                // Bristle streaks across the stroke's width, fainter than full ink.
                let prev = points[k.saturating_sub(1)];
                let next = points[(k + 1).min(n - 1)];
                let t = unit(sub(next, prev));
                let normal = [-t[1], t[0]];
                for offset in [-0.65f32, 0.0, 0.65] {
                    let q = [p[0] + normal[0] * offset * r, p[1] + normal[1] * offset * r];
                    stamp(canvas, q, r * 0.3, 0.75);
                }
            }
            _ => stamp(canvas, p, r, 1.0),
        }
    }
}

/// An anti-aliased disc, composited with max (ink does not add up where strokes cross).
fn stamp(canvas: &mut Array2<f32>, c: Point, r: f32, ink: f32) {
    let (x0, x1) = ((c[0] - r - 1.0).floor().max(0.0) as usize, ((c[0] + r + 1.0).ceil() as usize).min(HI - 1));
    let (y0, y1) = ((c[1] - r - 1.0).floor().max(0.0) as usize, ((c[1] + r + 1.0).ceil() as usize).min(HI - 1));
    if c[0] + r + 1.0 < 0.0 || c[1] + r + 1.0 < 0.0 {
        return;
    }
    for y in y0..=y1 {
        for x in x0..=x1 {
            let d = dist([x as f32 + 0.5, y as f32 + 0.5], c);
            let coverage = (r + 0.5 - d).clamp(0.0, 1.0) * ink;
            let px = &mut canvas[[y, x]];
            *px = px.max(coverage);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn a() -> Vec<Stroke> {
        super::super::kanjivg::parse_svg(include_str!("../../../fixtures/kanjivg/03042.svg")).unwrap()
    }

    #[test]
    fn same_seed_same_image_other_seed_other_image() {
        for style in &STYLES {
            let one = render(&a(), style, &mut StdRng::seed_from_u64(7));
            assert_eq!(one, render(&a(), style, &mut StdRng::seed_from_u64(7)), "{}", style.name);
            assert_ne!(one, render(&a(), style, &mut StdRng::seed_from_u64(8)), "{}", style.name);
        }
    }

    #[test]
    fn coverage_stays_in_range_and_ink_follows_the_strokes() {
        let strokes = a();
        for (i, style) in STYLES.iter().enumerate() {
            let img = render(&strokes, style, &mut StdRng::seed_from_u64(i as u64));
            assert!(img.iter().all(|v| (0.0..=1.0).contains(v)), "{}", style.name);
            let ink = img.iter().filter(|&&v| v > 0.5).count();
            // あ drawn with a 1.4–4.2 px radius pen covers a few hundred of 4096 pixels.
            assert!((150..2200).contains(&ink), "{}: {ink} ink pixels", style.name);
            // The start of stroke 2 (49.76, 17.62) is inked; the top-left corner is not.
            let [x, y] = [MARGIN + 50.5 * UNIT, MARGIN + 20.0 * UNIT];
            let near = (-2i32..=2).flat_map(|dy| (-2i32..=2).map(move |dx| (dx, dy)));
            assert!(near.into_iter().any(|(dx, dy)| img[[(y as i32 + dy) as usize, (x as i32 + dx) as usize]] > 0.5), "{}", style.name);
            assert_eq!(img[[0, 0]], 0.0);
        }
    }

    #[test]
    fn thicker_styles_put_down_more_ink() {
        let ink = |name: &str| -> usize {
            (0..20).map(|s| render(&a(), style(name).unwrap(), &mut StdRng::seed_from_u64(s)).iter().filter(|&&v| v > 0.5).count()).sum()
        };
        assert!(ink("marker") > ink("pen"));
        assert!(ink("pen") > ink("fine-pen"));
    }

    #[test]
    fn test_styles_exist_and_leave_training_styles() {
        for name in TEST_STYLES {
            assert!(style(name).is_some(), "{name}");
        }
        assert!(STYLES.len() - TEST_STYLES.len() >= 4);
    }
}
