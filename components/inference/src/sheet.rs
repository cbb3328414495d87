//! Contact sheets: the images of a prediction as a grid of tiles, each with its top-1 label and
//! probability under it, as one PNG. The one renderer: `POST /predict/{model}?format=png` and
//! `GET /tasks/{id}/sheet.png` both draw with [`contact_sheet`].
//!
//! Tiles show the image as the model sees it (white ink on black), scaled to [`TILE`] pixels.
//! At most [`MAX_TILES`] are drawn, whatever the batch size, so a 40,000-image job still gives a
//! small PNG; the title line says how many of how many. Glyphs come from a subset of VL PGothic
//! (ASCII, kana) embedded in the crate (`fonts/`, licence in `fonts/LICENSE`), so rendering needs
//! no file mount and gives the same bytes everywhere.

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use image::{ImageEncoder, Rgb, RgbImage};

use crate::api::PredictionResult;
use crate::decode::Images;

/// The most tiles one sheet draws (the first results of the batch).
pub const MAX_TILES: usize = 100;
/// Side of one image tile in pixels (a 28×28 input is drawn 3× by nearest neighbour).
pub const TILE: u32 = 84;
/// Tiles per row, at most.
pub const COLUMNS: usize = 10;

const CELL_W: u32 = TILE + 20;
const CAPTION_H: u32 = 40;
const CELL_H: u32 = 8 + TILE + CAPTION_H;
const MARGIN: u32 = 8;
const TITLE_H: u32 = 30;
const TITLE_PX: f32 = 16.0;
const LABEL_PX: f32 = 19.0;
const PROB_PX: f32 = 14.0;

const PAPER: [u8; 3] = [246, 243, 236];
const INK: [u8; 3] = [29, 29, 29];
const CONFIDENT: [u8; 3] = [30, 110, 60];
const UNSURE: [u8; 3] = [176, 58, 46];

/// VL PGothic reduced to ASCII, `·`, CJK punctuation, hiragana and katakana (29 KB).
static FONT_BYTES: &[u8] = include_bytes!("../fonts/VL-PGothic-kana.ttf");

/// A rendered contact sheet.
#[derive(Clone, Debug, PartialEq)]
pub struct Sheet {
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// Tiles drawn: `min(results, MAX_TILES)`.
    pub tiles: usize,
    /// Images in the batch.
    pub images: usize,
}

/// Draws the images `results` refer to (by `index` into `images`), captioned with each result's
/// `prediction` and `probability`, under a title naming `model` and the counts. Results past
/// [`MAX_TILES`], or whose index is not in `images`, are not drawn.
pub fn contact_sheet(model: &str, images: &Images, results: &[PredictionResult]) -> Sheet {
    let font = font();
    let shown: Vec<&PredictionResult> = results.iter().filter(|r| r.index < images.count).take(MAX_TILES).collect();
    let title = if shown.len() < images.count {
        format!("{model} · first {} of {} images", shown.len(), images.count)
    } else {
        format!("{model} · {} image{}", images.count, if images.count == 1 { "" } else { "s" })
    };
    let columns = shown.len().clamp(1, COLUMNS) as u32;
    let rows = shown.len().div_ceil(COLUMNS).max(1) as u32;
    let title_w = text_width(&font, &title, TITLE_PX).ceil() as u32;
    let width = (columns * CELL_W).max(title_w) + 2 * MARGIN;
    let height = TITLE_H + rows * CELL_H + MARGIN;
    let mut canvas = RgbImage::from_pixel(width, height, Rgb(PAPER));
    draw_text(&mut canvas, &font, &title, TITLE_PX, MARGIN as f32, 21.0, INK);

    for (n, result) in shown.iter().enumerate() {
        let x0 = MARGIN + (n % COLUMNS) as u32 * CELL_W;
        let y0 = TITLE_H + (n / COLUMNS) as u32 * CELL_H;
        draw_tile(&mut canvas, images, result.index, x0 + (CELL_W - TILE) / 2, y0 + 4);
        let label = caption_label(&font, result);
        let size = fit(&font, &label, LABEL_PX, (CELL_W - 4) as f32);
        let centre = x0 as f32 + CELL_W as f32 / 2.0;
        let caption_top = (y0 + 4 + TILE) as f32;
        draw_text(&mut canvas, &font, &label, size, centre - text_width(&font, &label, size) / 2.0, caption_top + 20.0, INK);
        let probability: f32 = result.probability.parse().unwrap_or(f32::NAN);
        let percent = format!("{:.1}%", probability * 100.0);
        let color = if probability >= 0.5 { CONFIDENT } else { UNSURE };
        draw_text(&mut canvas, &font, &percent, PROB_PX, centre - text_width(&font, &percent, PROB_PX) / 2.0, caption_top + 36.0, color);
    }

    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(canvas.as_raw(), width, height, image::ExtendedColorType::Rgb8)
        .expect("encoding an in-memory RGB image as PNG cannot fail");
    Sheet { png, width, height, tiles: shown.len(), images: images.count }
}

fn font() -> FontRef<'static> {
    FontRef::try_from_slice(FONT_BYTES).expect("the embedded font parses (checked by the tests)")
}

/// The prediction as a person reads it; its class index when the font lacks one of its glyphs
/// (a model with labels outside kana and ASCII), so a caption never shows empty boxes.
fn caption_label(font: &FontRef<'_>, result: &PredictionResult) -> String {
    let drawable = !result.prediction.is_empty() && result.prediction.chars().all(|c| c == ' ' || font.glyph_id(c).0 != 0);
    if drawable { result.prediction.clone() } else { format!("#{}", result.prediction_label) }
}

/// Image `index` scaled into a `TILE`×`TILE` square at (`x0`, `y0`), nearest neighbour, as the
/// model sees it: 0 black, 255 white.
fn draw_tile(canvas: &mut RgbImage, images: &Images, index: usize, x0: u32, y0: u32) {
    let (h, w) = (images.height, images.width);
    let pixels = images.image(index);
    for ty in 0..TILE {
        for tx in 0..TILE {
            let (y, x) = (ty as usize * h / TILE as usize, tx as usize * w / TILE as usize);
            let v = pixels[y * w + x].clamp(0.0, 255.0).round() as u8;
            canvas.put_pixel(x0 + tx, y0 + ty, Rgb([v, v, v]));
        }
    }
}

/// The advance width of `text` at `size` px, with kerning.
fn text_width(font: &FontRef<'_>, text: &str, size: f32) -> f32 {
    let scaled = font.as_scaled(PxScale::from(size));
    let mut width = 0.0;
    let mut previous = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = previous {
            width += scaled.kern(p, id);
        }
        width += scaled.h_advance(id);
        previous = Some(id);
    }
    width
}

/// `size`, shrunk so that `text` fits in `max_width` (long Fashion-MNIST labels in one tile).
fn fit(font: &FontRef<'_>, text: &str, size: f32, max_width: f32) -> f32 {
    let width = text_width(font, text, size);
    if width <= max_width { size } else { (size * max_width / width).floor().max(8.0) }
}

/// Draws `text` with its baseline at `baseline`, starting at `x`, blending `color` over the canvas
/// by glyph coverage; pixels outside the canvas are skipped.
fn draw_text(canvas: &mut RgbImage, font: &FontRef<'_>, text: &str, size: f32, x: f32, baseline: f32, color: [u8; 3]) {
    let scaled = font.as_scaled(PxScale::from(size));
    let mut caret = x;
    let mut previous = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = previous {
            caret += scaled.kern(p, id);
        }
        previous = Some(id);
        let glyph = id.with_scale_and_position(size, point(caret, baseline));
        caret += scaled.h_advance(id);
        let Some(outlined) = font.outline_glyph(glyph) else { continue };
        let bounds = outlined.px_bounds();
        outlined.draw(|gx, gy, coverage| {
            let (px, py) = (bounds.min.x as i64 + gx as i64, bounds.min.y as i64 + gy as i64);
            if px < 0 || py < 0 || px >= canvas.width() as i64 || py >= canvas.height() as i64 {
                return;
            }
            let pixel = canvas.get_pixel_mut(px as u32, py as u32);
            let a = coverage.clamp(0.0, 1.0);
            for (channel, ink) in pixel.0.iter_mut().zip(color) {
                *channel = (*channel as f32 * (1.0 - a) + ink as f32 * a).round() as u8;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(index: usize, prediction: &str, probability: f32) -> PredictionResult {
        PredictionResult {
            index,
            start_timestamp: "20240322_150000".into(),
            prediction: prediction.into(),
            prediction_label: index.to_string(),
            probability: probability.to_string(),
            top_k: None,
        }
    }

    /// `count` 28×28 images, image `i` a bright square whose corner moves with `i`.
    fn images(count: usize) -> Images {
        let mut pixels = vec![0u8; count * 28 * 28];
        for i in 0..count {
            for y in 8..20 {
                for x in 8..20 {
                    pixels[i * 784 + (y + i % 5) * 28 + x + i % 7] = 255;
                }
            }
        }
        Images::from_u8(count, 28, 28, &pixels)
    }

    fn decode(sheet: &Sheet) -> RgbImage {
        assert!(sheet.png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        image::load_from_memory_with_format(&sheet.png, image::ImageFormat::Png).unwrap().to_rgb8()
    }

    #[test]
    fn the_sheet_has_one_cell_per_result_in_rows_of_ten() {
        let results: Vec<_> = (0..12).map(|i| result(i, "あ", 0.9)).collect();
        let sheet = contact_sheet("hiragana-edge", &images(12), &results);
        let png = decode(&sheet);
        assert_eq!((png.width(), png.height()), (sheet.width, sheet.height));
        assert_eq!((sheet.width, sheet.height), (10 * CELL_W + 2 * MARGIN, TITLE_H + 2 * CELL_H + MARGIN));
        assert_eq!((sheet.tiles, sheet.images), (12, 12));
    }

    #[test]
    fn a_big_batch_draws_only_the_first_max_tiles() {
        let results: Vec<_> = (0..250).map(|i| result(i, "T-shirt/top", 0.3)).collect();
        let sheet = contact_sheet("fashion-mnist-cnn", &images(250), &results);
        assert_eq!((sheet.tiles, sheet.images), (MAX_TILES, 250));
        assert_eq!(sheet.height, TITLE_H + (MAX_TILES / COLUMNS) as u32 * CELL_H + MARGIN);
        decode(&sheet);
    }

    #[test]
    fn tiles_show_the_image_and_captions_have_ink() {
        let sheet = contact_sheet("hiragana-edge", &images(1), &[result(0, "く", 0.933)]);
        let png = decode(&sheet);
        let (x0, y0) = (MARGIN + (CELL_W - TILE) / 2, TITLE_H + 4);
        // The square spans input pixels 8..20: tile pixels 24..60 are white, the corner black.
        assert_eq!(png.get_pixel(x0 + 40, y0 + 40).0, [255, 255, 255]);
        assert_eq!(png.get_pixel(x0 + 2, y0 + 2).0, [0, 0, 0]);
        // The caption band (label and probability) and the title hold glyph pixels.
        let inked = |y_range: std::ops::Range<u32>, x_range: std::ops::Range<u32>| {
            y_range.flat_map(|y| x_range.clone().map(move |x| (x, y))).filter(|&(x, y)| png.get_pixel(x, y).0 != PAPER).count()
        };
        let caption = y0 + TILE..y0 + TILE + CAPTION_H;
        assert!(inked(caption.clone(), MARGIN..MARGIN + CELL_W) > 40, "no caption ink");
        assert!(inked(0..TITLE_H, 0..sheet.width) > 40, "no title ink");
        // The label's own glyph: a sheet captioned with a blank label has less ink there.
        let blank = decode(&contact_sheet("hiragana-edge", &images(1), &[result(0, " ", 0.933)]));
        let label_ink = |png: &RgbImage| (y0 + TILE..y0 + TILE + 24).flat_map(|y| (MARGIN..MARGIN + CELL_W).map(move |x| (x, y))).filter(|&(x, y)| png.get_pixel(x, y).0 != PAPER).count();
        assert!(label_ink(&png) > label_ink(&blank) + 20, "く drew no glyph: {} vs {}", label_ink(&png), label_ink(&blank));
    }

    #[test]
    fn the_same_input_gives_the_same_bytes() {
        let results: Vec<_> = (0..7).map(|i| result(i, ["あ", "ゝ", "Ankle boot"][i % 3], i as f32 / 7.0)).collect();
        let a = contact_sheet("m", &images(7), &results);
        let b = contact_sheet("m", &images(7), &results);
        assert_eq!(a, b);
        let other = contact_sheet("m", &images(7), &[&results[..6], &[result(6, "い", 0.5)]].concat());
        assert_ne!(a.png, other.png, "a different caption changes the picture");
    }

    #[test]
    fn the_font_covers_every_k49_label_and_ascii() {
        let font = font();
        let k49 = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/k49/k49_classmap.csv")).unwrap();
        let labels = k49.lines().skip(1).filter_map(|l| l.split(',').nth(2));
        for c in labels.flat_map(str::chars).chain((0x21u8..0x7f).map(char::from)) {
            assert_ne!(font.glyph_id(c).0, 0, "no glyph for {c:?}");
        }
    }

    #[test]
    fn labels_the_font_cannot_draw_fall_back_to_the_class_index() {
        let font = font();
        assert_eq!(caption_label(&font, &result(3, "漢", 0.5)), "#3");
        assert_eq!(caption_label(&font, &result(3, "", 0.5)), "#3");
        assert_eq!(caption_label(&font, &result(3, "ゑ", 0.5)), "ゑ");
    }
}
