//! Regenerates the derived fixtures in `fixtures/` from the real K49 npz files:
//! `cargo run -p kana-inference --features testing --example make-fixtures -- fixtures`
//! (PNG/JPEG/JSON renderings of K49 test images, and deliberately broken uploads).

use std::path::PathBuf;

use anyhow::Context;
use ndarray::{Array3, Array4};
use ndarray_npy::{NpzReader, NpzWriter};

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fixtures".into()));
    let mut npz = NpzReader::new(std::fs::File::open(root.join("k49/test_images_10.npz"))?)?;
    let images: Array3<u8> = npz.by_name("arr_0").context("arr_0")?;
    let image = |i: usize| image::GrayImage::from_raw(28, 28, images.slice(ndarray::s![i, .., ..]).iter().copied().collect()).unwrap();

    let samples = root.join("samples");
    std::fs::create_dir_all(&samples)?;
    // As in the dataset: light strokes on black.
    image(0).save(samples.join("k49_0_dark.png"))?;
    // Like a scan: dark ink on white paper, larger and not square (exercises invert + fit).
    let mut paper = image(1);
    image::imageops::invert(&mut paper);
    let wide = image::imageops::resize(&paper, 84, 56, image::imageops::FilterType::Triangle);
    let mut page = image::GrayImage::from_pixel(84, 84, image::Luma([255]));
    image::imageops::overlay(&mut page, &wide, 0, 14);
    page.save(samples.join("k49_1_paper.png"))?;
    page.save(samples.join("k49_1_paper.jpg"))?;
    // JSON pixel array: one 28×28 image, and a batch of 3 as {"images": ...}.
    let rows = |i: usize| -> Vec<Vec<u8>> { images.slice(ndarray::s![i, .., ..]).outer_iter().map(|r| r.to_vec()).collect() };
    std::fs::write(samples.join("k49_2.json"), serde_json::to_string(&rows(2))?)?;
    std::fs::write(samples.join("k49_3to5.json"), serde_json::to_string(&serde_json::json!({"images": [rows(3), rows(4), rows(5)]}))?)?;
    // Float intensities in [0, 1], shape (N, 1, 28, 28), key not arr_0 but the only array.
    let floats: Array4<f32> = images.slice(ndarray::s![0..3, .., ..]).mapv(|p| p as f32 / 255.0).insert_axis(ndarray::Axis(1)).to_owned();
    let mut w = NpzWriter::new_compressed(std::fs::File::create(samples.join("float01_n1hw.npz"))?);
    w.add_array("images", &floats)?;
    w.finish()?;

    let broken = root.join("broken");
    std::fs::create_dir_all(&broken)?;
    let good = std::fs::read(root.join("k49/test_images_10.npz"))?;
    std::fs::write(broken.join("truncated.npz"), &good[..good.len() / 2])?;
    let mut w = NpzWriter::new_compressed(std::fs::File::create(broken.join("wrong_dtype.npz"))?);
    w.add_array("arr_0", &images.mapv(i64::from))?;
    w.finish()?;
    let mut w = NpzWriter::new_compressed(std::fs::File::create(broken.join("wrong_shape.npz"))?);
    w.add_array("arr_0", &Array3::<u8>::zeros((2, 32, 32)))?;
    w.finish()?;
    std::fs::write(broken.join("text.npz"), "this is a text file, not a numpy archive\n")?;
    std::fs::write(broken.join("empty.npz"), b"")?;
    std::fs::write(broken.join("garbled.png"), b"\x89PNG\r\n\x1a\nthis is not a png body")?;
    println!("fixtures written under {}", root.display());
    Ok(())
}
