//! Contact sheets: a grid of 28×28 images, each with caption lines under it (a label, a
//! prediction and its probability). Hiragana captions need a Japanese font: the first one found
//! among the Debian fonts `cargo xtask setup` installs (IPAex Gothic, IPA licence); without one
//! the captions fall back to the embedded DejaVu Sans, which draws kana as boxes.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One image and what to write under it.
pub struct Tile {
    /// Row-major 28×28 (or any `side`×`side`) grayscale, 0 = black.
    pub pixels: Vec<u8>,
    pub captions: Vec<String>,
    /// Draw the first caption in this colour (e.g. red for a wrong prediction).
    pub highlight: Option<RGBColor>,
}

const KANA_FONT: &str = "kana-sheet";
/// Fonts tried for captions, in order.
const KANA_FONT_FILES: [&str; 3] = [
    "/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf",
    "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
    "/usr/share/fonts/truetype/vlgothic/VL-Gothic-Regular.ttf",
];

/// Registers a Japanese caption font once; its family name, or None when none is installed.
pub(crate) fn caption_font() -> Option<&'static str> {
    static FONT: OnceLock<Option<PathBuf>> = OnceLock::new();
    let found = FONT.get_or_init(|| {
        KANA_FONT_FILES.iter().map(PathBuf::from).find_map(|p| {
            let bytes: &'static [u8] = Box::leak(std::fs::read(&p).ok()?.into_boxed_slice());
            plotters::style::register_font(KANA_FONT, FontStyle::Normal, bytes).ok()?;
            Some(p)
        })
    });
    found.as_ref().map(|_| KANA_FONT)
}

/// The caption font's file, once registered.
fn caption_font_file() -> Option<PathBuf> {
    caption_font().and_then(|_| KANA_FONT_FILES.iter().map(PathBuf::from).find(|p| p.is_file()))
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing failed: {e:?}")
}

/// Writes a PNG grid of `tiles` (`columns` per row, each image scaled 3×) with a title line.
/// Returns the caption font's file, if a Japanese one was found.
pub fn contact_sheet(path: &Path, title: &str, tiles: &[Tile], side: usize, columns: usize) -> Result<Option<PathBuf>> {
    let font = caption_font().unwrap_or_else(|| {
        super::plots::register_font();
        super::plots::FONT
    });
    let scale = 3usize;
    let lines = tiles.iter().map(|t| t.captions.len()).max().unwrap_or(0);
    let (line_h, pad, title_h) = (15usize, 6usize, 34usize);
    // Wide enough for the longest caption (13 px text, ~8 px a character).
    let longest = tiles.iter().flat_map(|t| &t.captions).map(|c| c.chars().count()).max().unwrap_or(0);
    let cell_w = (side * scale).max(70).max(longest * 8) + pad;
    let cell_h = side * scale + lines * line_h + pad * 2;
    let rows = tiles.len().div_ceil(columns.max(1));
    let size = ((cell_w * columns.max(1) + pad) as u32, (title_h + cell_h * rows + pad) as u32);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let title_style = TextStyle::from((font, 18).into_font()).pos(Pos::new(HPos::Left, VPos::Top));
    root.draw(&Text::new(title.to_string(), (pad as i32, 8), title_style)).map_err(err)?;
    for (i, tile) in tiles.iter().enumerate() {
        let (col, row) = (i % columns, i / columns);
        let x0 = pad + col * cell_w + (cell_w - pad - side * scale) / 2;
        let y0 = title_h + row * cell_h;
        for (k, &p) in tile.pixels.iter().enumerate() {
            let (px, py) = (x0 + (k % side) * scale, y0 + (k / side) * scale);
            let rect = [(px as i32, py as i32), ((px + scale) as i32, (py + scale) as i32)];
            root.draw(&Rectangle::new(rect, RGBColor(p, p, p).filled())).map_err(err)?;
        }
        for (l, caption) in tile.captions.iter().enumerate() {
            let colour = if l == 0 { tile.highlight.unwrap_or(BLACK) } else { BLACK };
            let style = TextStyle::from((font, 13).into_font()).color(&colour).pos(Pos::new(HPos::Center, VPos::Top));
            let at = ((pad + col * cell_w + (cell_w - pad) / 2) as i32, (y0 + side * scale + 2 + l * line_h) as i32);
            root.draw(&Text::new(caption.clone(), at, style)).map_err(err)?;
        }
    }
    root.present().map_err(err)?;
    Ok(caption_font_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheet_has_the_grid_size_and_shows_the_images() {
        let tiles: Vec<Tile> = (0..7)
            .map(|i| Tile { pixels: vec![if i % 2 == 0 { 255 } else { 0 }; 28 * 28], captions: vec!["あ".into(), format!("{i}")], highlight: None })
            .collect();
        let path = std::env::temp_dir().join(format!("kana-sheet-{}.png", std::process::id()));
        contact_sheet(&path, "test", &tiles, 28, 3).unwrap();
        let img = image::open(&path).unwrap().to_luma8();
        // 3 columns of (84 + 6) px plus a margin; 3 rows.
        assert_eq!(img.width(), 3 * 90 + 6);
        assert_eq!(img.height() as usize, 34 + 3 * (84 + 2 * 15 + 12) + 6);
        // The first tile is white ink, the second black.
        let (x0, y0) = (6 + 3, 34 + 40);
        assert_eq!(img.get_pixel(x0 + 40, y0).0[0], 255);
        assert_eq!(img.get_pixel(x0 + 90 + 40, y0).0[0], 0);
        std::fs::remove_file(path).unwrap();
    }
}
