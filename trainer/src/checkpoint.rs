//! Training checkpoints: `<stem>.json` (architecture, progress, config) beside `<stem>.npz`
//! (weights, running stats and optimiser moments "m.<name>" / "v.<name>"). Written at the end of
//! every epoch and on Ctrl-C; `trainer train --resume <stem>.json` continues from one.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ndarray::{ArrayD, IxDyn, OwnedRepr};
use ndarray_npy::{NpzReader, NpzWriter};
use serde::{Deserialize, Serialize};

use crate::arch::{Architecture, Weights};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Epochs fully done.
    pub epoch: usize,
    /// Batches done inside the current epoch.
    pub batch: usize,
    /// Optimiser steps so far.
    pub step: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub arch: Architecture,
    pub progress: Progress,
    /// The training config that produced it (kept as JSON so old checkpoints stay readable).
    pub config: serde_json::Value,
    pub weights_file: String,
}

pub struct Checkpoint {
    pub meta: CheckpointMeta,
    pub weights: Weights,
    pub optimizer: Weights,
}

fn npz_path(json: &Path) -> PathBuf {
    json.with_extension("npz")
}

pub fn save(json: &Path, meta: &CheckpointMeta, weights: &Weights, optimizer: &Weights) -> Result<()> {
    let npz = npz_path(json);
    let mut w = NpzWriter::new(File::create(&npz).with_context(|| format!("creating {}", npz.display()))?);
    for (name, a) in weights.iter().chain(optimizer.iter()) {
        w.add_array(name.as_str(), a).with_context(|| format!("writing {name}"))?;
    }
    w.finish().context("finishing npz")?;
    let meta = CheckpointMeta { weights_file: npz.file_name().unwrap().to_string_lossy().into(), ..meta.clone() };
    std::fs::write(json, serde_json::to_vec_pretty(&meta)?).with_context(|| format!("writing {}", json.display()))?;
    Ok(())
}

pub fn load(json: &Path) -> Result<Checkpoint> {
    let meta: CheckpointMeta =
        serde_json::from_slice(&std::fs::read(json).with_context(|| format!("reading {}", json.display()))?).context("parsing checkpoint")?;
    let npz = json.with_file_name(&meta.weights_file);
    let mut r = NpzReader::new(File::open(&npz).with_context(|| format!("opening {}", npz.display()))?)?;
    let (mut weights, mut optimizer) = (Weights::new(), Weights::new());
    for name in r.names()? {
        let a: ArrayD<f32> = r.by_name::<OwnedRepr<f32>, IxDyn>(&name).with_context(|| format!("reading {name}"))?;
        let key = name.trim_end_matches(".npy").to_string();
        if key.starts_with("m.") || key.starts_with("v.") {
            optimizer.insert(key, a);
        } else {
            weights.insert(key, a);
        }
    }
    Ok(Checkpoint { meta, weights, optimizer })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_weights_and_state() {
        let arch = crate::model::zoo("cnn", [1, 12, 12], 3).unwrap();
        let weights = crate::model::init_weights(&arch, 5);
        let mut opt = Weights::new();
        opt.insert("m.0.weight".into(), weights["0.weight"].mapv(|v| v * 2.0));
        let dir = std::env::temp_dir().join(format!("kana-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("last.json");
        let meta = CheckpointMeta { arch: arch.clone(), progress: Progress { epoch: 2, batch: 7, step: 99 }, config: serde_json::json!({"x": 1}), weights_file: String::new() };
        save(&path, &meta, &weights, &opt).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back.weights, weights);
        assert_eq!(back.optimizer, opt);
        assert_eq!(back.meta.progress, meta.progress);
        assert_eq!(back.meta.arch, arch);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
