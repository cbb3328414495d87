//! Training data: loading (Fashion-MNIST IDX, K49-layout npz), a seeded stratified validation
//! split, class-balanced sampling for imbalanced sets like K49, and normalised f32 batches.

pub mod classes;
pub mod fetch;
pub mod handwriting;
pub mod idx;
pub mod kanjivg;
pub mod npz;
pub mod synth;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use kana_inference::card::{Class, Normalization};
use ndarray::{Array3, Array4, Axis, s};
use rand::SeedableRng;
use rand::prelude::*;
use rand::rngs::StdRng;

/// The input normalisation every zoo model is trained with, as the model card records it.
pub fn model_normalization() -> Normalization {
    Normalization {
        scale: 1.0 / 255.0,
        mean: vec![crate::model::NORM_MEAN],
        std: vec![crate::model::NORM_STD],
    }
}

/// Grayscale 28×28 images (or any H×W) with one label each.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Short name used in run directories and cards: "fashion-mnist", "k49", ...
    pub name: String,
    /// [N, H, W], 0 = background.
    pub images: Array3<u8>,
    pub labels: Vec<u16>,
    /// Index → label, shared with the model card.
    pub classes: Vec<Class>,
}

/// Which half of a dataset to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// Where a dataset comes from, as named on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// IDX .gz files (Debian `dataset-fashion-mnist` by default).
    FashionMnist { dir: PathBuf },
    /// `k49-{train,test}-{imgs,labels}.npz` as published by CODH.
    K49 { dir: PathBuf },
    /// Any npz pair in the K49 layout: `<prefix>-{train,test}-{imgs,labels}.npz`, with an optional
    /// `<prefix>-classmap.csv` (K49 format) beside it.
    NpzPair { dir: PathBuf, prefix: String },
}

pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";
pub const K49_DIR: &str = "data/k49";

impl Source {
    /// Parses `fashion-mnist`, `k49`, `fashion-mnist:<dir>`, `k49:<dir>` or `npz:<dir>/<prefix>`.
    pub fn parse(spec: &str) -> Result<Source> {
        let (kind, path) = match spec.split_once(':') {
            Some((k, p)) => (k, Some(PathBuf::from(p))),
            None => (spec, None),
        };
        Ok(match kind {
            "fashion-mnist" => Source::FashionMnist {
                dir: path.unwrap_or_else(|| FASHION_MNIST_DIR.into()),
            },
            "k49" => Source::K49 { dir: path.unwrap_or_else(|| K49_DIR.into()) },
            "npz" => {
                let path = path.context("npz datasets are given as npz:<dir>/<prefix>")?;
                let prefix = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .context("npz:<dir>/<prefix> needs a file prefix")?
                    .to_string();
                let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                Source::NpzPair { dir, prefix }
            }
            other => bail!(
                "unknown dataset {other:?}: use fashion-mnist[:dir], k49[:dir] or npz:<dir>/<prefix>"
            ),
        })
    }

    /// The name that goes into cards and run directories.
    pub fn name(&self) -> String {
        match self {
            Source::FashionMnist { .. } => "fashion-mnist".into(),
            Source::K49 { .. } => "k49".into(),
            Source::NpzPair { prefix, .. } => prefix.clone(),
        }
    }

    /// What the data is and the credit its licence asks for, as a card records them. An npz pair
    /// made by `trainer synth` says so in its `<prefix>-dataset.json`.
    pub fn provenance(&self) -> (Option<String>, Option<String>) {
        match self {
            Source::FashionMnist { .. } => (Some("Fashion-MNIST (Zalando Research), 60,000 training images".into()), None),
            Source::K49 { .. } => (Some("Kuzushiji-49 (ROIS-DS CODH), real handwritten Kuzushiji".into()), None),
            Source::NpzPair { dir, prefix } => {
                let meta = std::fs::read_to_string(dir.join(format!("{prefix}-dataset.json"))).ok();
                let meta: Option<serde_json::Value> = meta.and_then(|m| serde_json::from_str(&m).ok());
                let field = |k: &str| meta.as_ref()?.get(k)?.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
                (field("description"), field("attribution"))
            }
        }
    }

    pub fn load(&self, split: Split) -> Result<Dataset> {
        let name = self.name();
        let (images, labels, classes) = match self {
            Source::FashionMnist { dir } => {
                let (img, lbl) = idx::fashion_mnist_files(split);
                let images = idx::read_images(&dir.join(img))?;
                let labels = idx::read_labels(&dir.join(lbl))?;
                (images, labels, classes::fashion_mnist())
            }
            Source::K49 { dir } => {
                let (images, labels) = npz::read_pair(dir, "k49", split)?;
                (images, labels, classes::k49())
            }
            Source::NpzPair { dir, prefix } => {
                let (images, labels) = npz::read_pair(dir, prefix, split)?;
                let map = dir.join(format!("{prefix}-classmap.csv"));
                let classes = if map.exists() {
                    kana_inference::card::classes_from_csv(&std::fs::read_to_string(&map)?)
                        .map_err(|e| anyhow::anyhow!("reading {}: {e}", map.display()))?
                } else {
                    let n = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
                    (0..n).map(|i| Class { index: i, label: i.to_string(), codepoint: None }).collect()
                };
                (images, labels, classes)
            }
        };
        Dataset::new(name, images, labels, classes)
    }
}

impl Dataset {
    /// Checks that images, labels and classes agree.
    pub fn new(
        name: String,
        images: Array3<u8>,
        labels: Vec<u16>,
        classes: Vec<Class>,
    ) -> Result<Dataset> {
        ensure!(
            images.len_of(Axis(0)) == labels.len(),
            "{name}: {} images but {} labels",
            images.len_of(Axis(0)),
            labels.len()
        );
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= classes.len()) {
            bail!("{name}: label {bad} but only {} classes", classes.len());
        }
        Ok(Dataset { name, images, labels, classes })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// [height, width] of one image.
    pub fn image_size(&self) -> [usize; 2] {
        [self.images.dim().1, self.images.dim().2]
    }

    /// Images per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes()];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// The rows `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        Dataset {
            name: self.name.clone(),
            images: self.images.select(Axis(0), indices),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes.clone(),
        }
    }

    /// The first `n` images (all if fewer).
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            name: self.name.clone(),
            images: self.images.slice(s![..n, .., ..]).to_owned(),
            labels: self.labels[..n].to_vec(),
            classes: self.classes.clone(),
        }
    }

    /// Stratified, seeded split: `fraction` of every class goes to the second (validation) set, so
    /// rare K49 classes are represented in both.
    pub fn split_validation(&self, fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        ensure!((0.0..1.0).contains(&fraction), "validation fraction must be in [0, 1)");
        let mut rng = StdRng::seed_from_u64(seed);
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); self.num_classes()];
        for (i, &l) in self.labels.iter().enumerate() {
            by_class[l as usize].push(i);
        }
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for mut rows in by_class {
            rows.shuffle(&mut rng);
            let n_val = (rows.len() as f64 * fraction).round() as usize;
            val.extend_from_slice(&rows[..n_val]);
            train.extend_from_slice(&rows[n_val..]);
        }
        // Keep the original order inside each part: deterministic and cache-friendly.
        train.sort_unstable();
        val.sort_unstable();
        Ok((self.subset(&train), self.subset(&val)))
    }

    /// The order in which one epoch visits the images.
    pub fn epoch_order(&self, sampling: Sampling, rng: &mut impl Rng) -> Vec<usize> {
        match sampling {
            Sampling::Sequential => (0..self.len()).collect(),
            Sampling::Shuffle => {
                let mut order: Vec<usize> = (0..self.len()).collect();
                order.shuffle(rng);
                order
            }
            Sampling::Balanced => {
                // Draw a class uniformly, then an image of it: every class is seen equally often.
                let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); self.num_classes()];
                for (i, &l) in self.labels.iter().enumerate() {
                    by_class[l as usize].push(i);
                }
                by_class.retain(|rows| !rows.is_empty());
                if by_class.is_empty() {
                    return Vec::new();
                }
                (0..self.len())
                    .map(|_| {
                        let rows = &by_class[rng.random_range(0..by_class.len())];
                        rows[rng.random_range(0..rows.len())]
                    })
                    .collect()
            }
        }
    }

    /// Normalised batches over `order`; the last batch may be short.
    pub fn batches<'a>(
        &'a self,
        order: &'a [usize],
        batch_size: usize,
        norm: &'a Normalization,
    ) -> impl ExactSizeIterator<Item = Batch> + 'a {
        let batch_size = batch_size.max(1);
        order.chunks(batch_size).map(move |rows| self.batch(rows, norm))
    }

    /// One normalised batch: x [B, 1, H, W], labels as u32 (what GPU buffers want).
    pub fn batch(&self, rows: &[usize], norm: &Normalization) -> Batch {
        let [h, w] = self.image_size();
        let (scale, mean, std) = (norm.scale, norm.mean[0], norm.std[0]);
        let mut x = Array4::<f32>::zeros((rows.len(), 1, h, w));
        for (b, &r) in rows.iter().enumerate() {
            let src = self.images.index_axis(Axis(0), r);
            x.slice_mut(s![b, 0, .., ..]).zip_mut_with(&src, |d, &p| *d = (p as f32 * scale - mean) / std);
        }
        Batch { x, labels: rows.iter().map(|&r| self.labels[r] as u32).collect() }
    }
}

/// How an epoch orders (or draws) its images.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampling {
    /// Dataset order (evaluation).
    Sequential,
    /// A fresh permutation each epoch.
    #[default]
    Shuffle,
    /// Class-balanced: each draw picks a class uniformly, then one of its images (with
    /// replacement), so an epoch has as many images as the dataset but equal classes.
    Balanced,
}

/// One normalised mini-batch.
#[derive(Clone, Debug)]
pub struct Batch {
    /// [B, 1, H, W]
    pub x: Array4<f32>,
    pub labels: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(labels: Vec<u16>, classes: usize) -> Dataset {
        let n = labels.len();
        let images = Array3::from_shape_fn((n, 2, 3), |(i, y, x)| (i * 10 + y * 3 + x) as u8);
        let classes = (0..classes).map(|i| Class { index: i, label: i.to_string(), codepoint: None }).collect();
        Dataset::new("toy".into(), images, labels, classes).unwrap()
    }

    #[test]
    fn rejects_labels_outside_the_classes() {
        let images = Array3::zeros((2, 2, 2));
        let classes = vec![Class { index: 0, label: "a".into(), codepoint: None }];
        let err = Dataset::new("x".into(), images, vec![0, 1], classes).unwrap_err();
        assert!(err.to_string().contains("label 1"), "{err}");
    }

    #[test]
    fn split_is_stratified_disjoint_and_seeded() {
        let labels: Vec<u16> = (0..100).map(|i| if i < 90 { 0 } else { 1 }).collect();
        let ds = toy(labels, 2);
        let (train, val) = ds.split_validation(0.2, 7).unwrap();
        assert_eq!(train.len() + val.len(), 100);
        assert_eq!(val.class_counts(), vec![18, 2]);
        assert_eq!(train.class_counts(), vec![72, 8]);
        // Disjoint: image pixel (0,0) encodes the original row.
        let mut rows: Vec<u8> = train.images.slice(s![.., 0, 0]).iter().chain(val.images.slice(s![.., 0, 0]).iter()).copied().collect();
        rows.sort_unstable();
        rows.dedup();
        assert_eq!(rows.len(), 100);
        let (_, val2) = ds.split_validation(0.2, 7).unwrap();
        assert_eq!(val.images, val2.images);
        let (_, val3) = ds.split_validation(0.2, 8).unwrap();
        assert_ne!(val.images, val3.images);
    }

    #[test]
    fn balanced_sampling_evens_out_classes() {
        let labels: Vec<u16> = (0..1000).map(|i| if i < 950 { 0 } else { 1 }).collect();
        let ds = toy(labels, 2);
        let mut rng = StdRng::seed_from_u64(1);
        let order = ds.epoch_order(Sampling::Balanced, &mut rng);
        assert_eq!(order.len(), 1000);
        let rare = order.iter().filter(|&&i| ds.labels[i] == 1).count();
        assert!((400..600).contains(&rare), "rare class drawn {rare} times of 1000");
        let shuffled = ds.epoch_order(Sampling::Shuffle, &mut rng);
        let mut sorted = shuffled.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_ne!(shuffled, sorted);
    }

    #[test]
    fn batches_are_normalised_and_cover_everything() {
        let ds = toy(vec![0, 1, 0, 1, 1], 2);
        let norm = Normalization { scale: 1.0 / 255.0, mean: vec![0.5], std: vec![0.25] };
        let order: Vec<usize> = (0..5).collect();
        let batches: Vec<Batch> = ds.batches(&order, 2, &norm).collect();
        assert_eq!(batches.iter().map(|b| b.x.dim().0).collect::<Vec<_>>(), vec![2, 2, 1]);
        assert_eq!(batches[2].labels, vec![1]);
        let p = ds.images[[3, 1, 2]] as f32;
        assert!((batches[1].x[[1, 0, 1, 2]] - (p / 255.0 - 0.5) / 0.25).abs() < 1e-6);
    }

    #[test]
    fn parses_dataset_specs() {
        assert_eq!(Source::parse("fashion-mnist").unwrap(), Source::FashionMnist { dir: FASHION_MNIST_DIR.into() });
        assert_eq!(Source::parse("k49:/tmp/k").unwrap(), Source::K49 { dir: "/tmp/k".into() });
        assert_eq!(
            Source::parse("npz:data/kana-synth/kana").unwrap(),
            Source::NpzPair { dir: "data/kana-synth".into(), prefix: "kana".into() }
        );
        assert!(Source::parse("mnist").is_err());
    }
}
