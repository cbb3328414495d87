//! Kuzushiji-49 layout: `<prefix>-{train,test}-{imgs,labels}.npz`, each holding one array `arr_0`
//! (uint8 images [N, 28, 28], integer labels [N]), as written by `np.savez_compressed`.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ndarray::{Array1, Array3};
use ndarray_npy::{NpzReader, NpzWriter};

use super::Split;

pub fn pair_paths(dir: &Path, prefix: &str, split: Split) -> (PathBuf, PathBuf) {
    let s = split.as_str();
    (dir.join(format!("{prefix}-{s}-imgs.npz")), dir.join(format!("{prefix}-{s}-labels.npz")))
}

fn open(path: &Path) -> Result<NpzReader<File>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    NpzReader::new(file).with_context(|| format!("{} is not an npz file", path.display()))
}

pub fn read_images(path: &Path) -> Result<Array3<u8>> {
    open(path)?
        .by_name("arr_0")
        .with_context(|| format!("{}: expected uint8 arr_0 of shape [N, H, W]", path.display()))
}

/// Labels are uint8 in the official files; other integer types written by other tools work too.
pub fn read_labels(path: &Path) -> Result<Vec<u16>> {
    fn widen<T: Copy + TryInto<u16>>(a: Array1<T>) -> Result<Vec<u16>> {
        a.iter().map(|&v| v.try_into().map_err(|_| anyhow::anyhow!("label out of range"))).collect()
    }
    let mut npz = open(path)?;
    if let Ok(a) = npz.by_name::<_, ndarray::Ix1>("arr_0") {
        return widen::<u8>(a);
    }
    if let Ok(a) = npz.by_name::<_, ndarray::Ix1>("arr_0") {
        return widen::<u16>(a);
    }
    if let Ok(a) = npz.by_name::<_, ndarray::Ix1>("arr_0") {
        return widen::<i32>(a);
    }
    if let Ok(a) = npz.by_name::<_, ndarray::Ix1>("arr_0") {
        return widen::<i64>(a);
    }
    bail!("{}: expected integer arr_0 of shape [N]", path.display())
}

pub fn read_pair(dir: &Path, prefix: &str, split: Split) -> Result<(Array3<u8>, Vec<u16>)> {
    let (imgs, labels) = pair_paths(dir, prefix, split);
    Ok((read_images(&imgs)?, read_labels(&labels)?))
}

/// Writes one split in the K49 layout (compressed, `arr_0`), e.g. for `trainer synth`.
pub fn write_pair(dir: &Path, prefix: &str, split: Split, images: &Array3<u8>, labels: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let (img_path, lbl_path) = pair_paths(dir, prefix, split);
    let mut w = NpzWriter::new_compressed(File::create(&img_path)?);
    w.add_array("arr_0", images)?;
    w.finish()?;
    let mut w = NpzWriter::new_compressed(File::create(&lbl_path)?);
    w.add_array("arr_0", &Array1::from(labels.to_vec()))?;
    w.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_pair_and_reads_other_label_types() {
        let dir = std::env::temp_dir().join(format!("kana-npz-{}", std::process::id()));
        let images = Array3::from_shape_fn((3, 28, 28), |(i, y, x)| (i + y + x) as u8);
        write_pair(&dir, "toy", Split::Train, &images, &[2, 0, 1]).unwrap();
        let (img, lbl) = read_pair(&dir, "toy", Split::Train).unwrap();
        assert_eq!(img, images);
        assert_eq!(lbl, vec![2, 0, 1]);

        let i64_labels = dir.join("i64.npz");
        let mut w = NpzWriter::new(File::create(&i64_labels).unwrap());
        w.add_array("arr_0", &Array1::from(vec![5i64, 48])).unwrap();
        w.finish().unwrap();
        assert_eq!(read_labels(&i64_labels).unwrap(), vec![5, 48]);
        assert!(read_images(&i64_labels).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reads_the_shared_k49_fixture() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/k49/test_images_10.npz");
        if !path.exists() {
            eprintln!("skipping: {} missing", path.display());
            return;
        }
        assert_eq!(read_images(&path).unwrap().dim(), (10, 28, 28));
    }
}
