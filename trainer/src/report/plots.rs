//! PNG charts (plotters, bitmap backend): training curves and the confusion matrix. Text uses the
//! embedded DejaVu Sans (plotters' ab_glyph backend has no system font lookup).

use std::path::Path;
use std::sync::Once;

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::EpochRecord;
use crate::metrics::ConfusionMatrix;

pub(crate) const FONT: &str = "sans-serif";
static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

pub(crate) fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU_SANS)
            .unwrap_or_else(|_| panic!("the embedded DejaVu Sans is a valid font"));
    });
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing failed: {e:?}")
}

const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VAL: RGBColor = RGBColor(255, 127, 14);

/// Loss and accuracy per epoch, train and (when present) validation, side by side.
pub fn training_curves(path: &Path, title: &str, history: &[EpochRecord]) -> Result<()> {
    register_font();
    let root = BitMapBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let root = root.titled(title, (FONT, 22)).map_err(plot_err)?;
    let panels = root.split_evenly((1, 2));
    let last = history.iter().map(|h| h.epoch).max().unwrap_or(1) as f64;
    type Get = fn(&EpochRecord) -> Option<f64>;
    // (label, colour, points) of one curve.
    type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);
    let specs: [(&str, Get, Get); 2] = [
        ("loss", |h| Some(h.train_loss), |h| h.val_loss),
        ("accuracy", |h| Some(h.train_accuracy), |h| h.val_accuracy),
    ];
    for (area, (name, train, val)) in panels.iter().zip(specs) {
        let series: Vec<Series> = [("train", TRAIN, train), ("validation", VAL, val)]
            .into_iter()
            .map(|(label, color, get)| {
                let pts: Vec<(f64, f64)> = history.iter().filter_map(|h| get(h).filter(|v| v.is_finite()).map(|v| (h.epoch as f64, v))).collect();
                (label, color, pts)
            })
            .filter(|s| !s.2.is_empty())
            .collect();
        let (lo, hi) = series
            .iter()
            .flat_map(|(_, _, p)| p.iter().map(|&(_, y)| y))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| (lo.min(y), hi.max(y)));
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        let pad = ((hi - lo) * 0.08).max(1e-3);
        let mut chart = ChartBuilder::on(area)
            .caption(name, (FONT, 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.5..last + 0.5, (lo - pad)..(hi + pad))
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(name)
            .x_labels(last.min(12.0) as usize + 1)
            .x_label_formatter(&|x| if x.fract().abs() < 1e-9 { format!("{x:.0}") } else { String::new() })
            .label_style((FONT, 13))
            .draw()
            .map_err(plot_err)?;
        for (label, color, pts) in series {
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(plot_err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled()))).map_err(plot_err)?;
        }
        chart
            .configure_series_labels()
            .position(if name == "loss" { SeriesLabelPosition::UpperRight } else { SeriesLabelPosition::LowerRight })
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Row-normalised heat map (each true class sums to 1), with counts written in the cells when
/// there is room. Labels the font cannot show (hiragana: DejaVu has none) become class indices.
pub fn confusion_matrix(path: &Path, cm: &ConfusionMatrix, labels: &[String], title: &str) -> Result<()> {
    register_font();
    let n = cm.classes();
    let cell: i32 = if n <= 12 { 56 } else if n <= 30 { 26 } else { 16 };
    let ascii = labels.iter().all(|l| l.chars().all(|c| c.is_ascii() && !c.is_ascii_control()));
    // Kana labels need a Japanese font; without one the axes show class indices.
    let (label_font, drawable) = if ascii { (FONT, true) } else { super::sheet::caption_font().map_or((FONT, false), |f| (f, true)) };
    let printable = labels.len() == n && drawable;
    let label_of = |i: usize| if printable { labels[i].clone() } else { i.to_string() };
    let margin_left = if printable { 120 } else { 60 };
    let (margin_top, margin_bottom, margin_right) = (50, if printable { 120 } else { 60 }, 20);
    let side = cell * n as i32;
    let size = ((margin_left + side + margin_right) as u32, (margin_top + side + margin_bottom) as u32);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;

    let center = Pos::new(HPos::Center, VPos::Center);
    let title_style = TextStyle::from((FONT, 20).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    root.draw(&Text::new(title.to_string(), (size.0 as i32 / 2, 12), title_style)).map_err(plot_err)?;

    let label_size = if n <= 12 { 14 } else { 11 };
    let row_sums = cm.counts.sum_axis(ndarray::Axis(1));
    for t in 0..n {
        for p in 0..n {
            let count = cm.counts[[t, p]];
            let frac = if row_sums[t] == 0 { 0.0 } else { count as f64 / row_sums[t] as f64 };
            // White → dark blue.
            let shade = |full: f64| (255.0 - (255.0 - full) * frac.sqrt()) as u8;
            let color = RGBColor(shade(8.0), shade(48.0), shade(107.0));
            let (x0, y0) = (margin_left + p as i32 * cell, margin_top + t as i32 * cell);
            root.draw(&Rectangle::new([(x0, y0), (x0 + cell, y0 + cell)], color.filled())).map_err(plot_err)?;
            if n <= 12 && count > 0 {
                let ink = if frac > 0.4 { WHITE } else { BLACK };
                let style = TextStyle::from((FONT, 13).into_font()).color(&ink).pos(center);
                root.draw(&Text::new(count.to_string(), (x0 + cell / 2, y0 + cell / 2), style)).map_err(plot_err)?;
            }
        }
    }
    let axis = TextStyle::from((label_font, label_size).into_font());
    for i in 0..n {
        let mid = cell * i as i32 + cell / 2;
        let left = axis.clone().pos(Pos::new(HPos::Right, VPos::Center));
        root.draw(&Text::new(label_of(i), (margin_left - 6, margin_top + mid), left)).map_err(plot_err)?;
        let below = axis.clone().pos(Pos::new(HPos::Right, VPos::Center)).transform(FontTransform::Rotate270);
        root.draw(&Text::new(label_of(i), (margin_left + mid, margin_top + side + 6), below)).map_err(plot_err)?;
    }
    let desc = TextStyle::from((FONT, 15).into_font());
    root.draw(&Text::new(
        "predicted",
        (margin_left + side / 2, size.1 as i32 - 18),
        desc.clone().pos(center),
    ))
    .map_err(plot_err)?;
    root.draw(&Text::new("true", (14, margin_top + side / 2), desc.pos(center).transform(FontTransform::Rotate270)))
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_png_has_the_expected_size_and_colours() {
        let dir = std::env::temp_dir().join(format!("kana-plots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cm = ConfusionMatrix::from_predictions(3, &[0, 0, 1, 2, 2], &[0, 1, 1, 2, 0]);
        let labels: Vec<String> = ["cat", "dog", "bird"].map(String::from).to_vec();
        let path = dir.join("cm.png");
        confusion_matrix(&path, &cm, &labels, "toy").unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (120 + 3 * 56 + 20, 50 + 3 * 56 + 120));
        // Cell [1,1] (recall 1.0) is the darkest blue; cell [1,0] (no images) stays white.
        let at = |t: u32, p: u32| img.get_pixel(120 + p * 56 + 4, 50 + t * 56 + 4).0;
        assert_eq!(at(1, 1), [8, 48, 107]);
        assert_eq!(at(1, 0), [255, 255, 255]);

        let k49 = ConfusionMatrix::from_predictions(49, &[0, 48], &[0, 47]);
        let hiragana: Vec<String> = crate::data::classes::k49().into_iter().map(|c| c.label).collect();
        confusion_matrix(&dir.join("k49.png"), &k49, &hiragana, "k49").unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
