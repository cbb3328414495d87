//! IDX files (the MNIST / Fashion-MNIST format), optionally gzip-compressed.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use ndarray::Array3;

use super::Split;

/// (images, labels) file names of Fashion-MNIST as shipped by Debian `dataset-fashion-mnist`.
pub fn fashion_mnist_files(split: Split) -> (&'static str, &'static str) {
    match split {
        Split::Train => ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        Split::Test => ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    }
}

/// Whole file, gunzipped when it starts with the gzip magic.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| {
        format!(
            "reading {} (Fashion-MNIST: `apt-get install dataset-fashion-mnist`)",
            path.display()
        )
    })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("gunzip {}", path.display()))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX header of unsigned bytes with `rank` dimensions; returns dims and the payload.
fn parse(bytes: &[u8], rank: u8) -> Result<(Vec<usize>, &[u8])> {
    ensure!(bytes.len() >= 4, "IDX file too short");
    if bytes[0] != 0 || bytes[1] != 0 {
        bail!("not an IDX file (bad magic)");
    }
    ensure!(bytes[2] == 0x08, "IDX element type {:#x} is not unsigned byte", bytes[2]);
    ensure!(bytes[3] == rank, "IDX rank {} where {rank} was expected", bytes[3]);
    let header = 4 + 4 * rank as usize;
    ensure!(bytes.len() >= header, "IDX header truncated");
    let dims: Vec<usize> = (0..rank as usize)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let payload = &bytes[header..];
    let want: usize = dims.iter().product();
    ensure!(payload.len() == want, "IDX payload has {} bytes, dims {dims:?} need {want}", payload.len());
    Ok((dims, payload))
}

pub fn parse_images(bytes: &[u8]) -> Result<Array3<u8>> {
    let (dims, payload) = parse(bytes, 3)?;
    Ok(Array3::from_shape_vec((dims[0], dims[1], dims[2]), payload.to_vec())?)
}

pub fn parse_labels(bytes: &[u8]) -> Result<Vec<u16>> {
    let (_, payload) = parse(bytes, 1)?;
    Ok(payload.iter().map(|&b| b as u16).collect())
}

pub fn read_images(path: &Path) -> Result<Array3<u8>> {
    parse_images(&read_maybe_gz(path)?).with_context(|| format!("parsing {}", path.display()))
}

pub fn read_labels(path: &Path) -> Result<Vec<u16>> {
    parse_labels(&read_maybe_gz(path)?).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn idx(rank: u8, dims: &[u32], payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, rank];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn parses_images_and_labels() {
        let img = parse_images(&idx(3, &[2, 1, 3], &[1, 2, 3, 4, 5, 6])).unwrap();
        assert_eq!(img.dim(), (2, 1, 3));
        assert_eq!(img[[1, 0, 2]], 6);
        assert_eq!(parse_labels(&idx(1, &[3], &[9, 0, 4])).unwrap(), vec![9, 0, 4]);
    }

    #[test]
    fn rejects_truncated_and_wrong_files() {
        assert!(parse_images(&idx(3, &[2, 1, 3], &[1, 2, 3])).is_err());
        assert!(parse_images(&idx(1, &[3], &[1, 2, 3])).is_err());
        assert!(parse_labels(b"PK\x03\x04").is_err());
    }

    #[test]
    fn reads_gzip_files() {
        let dir = std::env::temp_dir().join(format!("kana-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("labels.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&idx(1, &[2], &[7, 8])).unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        assert_eq!(read_labels(&path).unwrap(), vec![7, 8]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reads_debian_fashion_mnist_when_installed() {
        let dir = Path::new(super::super::FASHION_MNIST_DIR);
        if !dir.exists() {
            eprintln!("skipping: {} not installed", dir.display());
            return;
        }
        let (_, lbl) = fashion_mnist_files(Split::Test);
        let labels = read_labels(&dir.join(lbl)).unwrap();
        assert_eq!(labels.len(), 10_000);
        assert!(labels.iter().all(|&l| l < 10));
    }
}
