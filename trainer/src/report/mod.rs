//! The run directory a training run leaves behind:
//! `runs/<YYYYmmdd_HHMMSS>_<model>/` with `<YYYYmmdd_HHMMSS>_<model>.log`, `config.json`,
//! `metrics.json` (per-epoch history and final reports), `confusion.csv`, `confusion.png` and
//! `curves.png` (see [`plots`]).

pub mod plots;
pub mod sheet;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Local};
use serde::{Deserialize, Serialize};

use crate::metrics::{ConfusionMatrix, Report};

/// One epoch of training, as logged and plotted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
    pub learning_rate: f64,
    pub images_per_s: f64,
    pub seconds: f64,
}

/// Everything `metrics.json` holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    pub model: String,
    pub dataset: String,
    pub history: Vec<EpochRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Report>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Report>,
    pub wall_time_s: f64,
}

pub struct RunDir {
    pub path: PathBuf,
    /// `<YYYYmmdd_HHMMSS>_<model>`: the directory and log file name.
    pub stem: String,
    log: File,
}

impl RunDir {
    /// Creates `<root>/<stamp>_<model>/` and its log file. Two runs started in the same second get
    /// `_2`, `_3`, ... rather than sharing a directory.
    pub fn create(root: &Path, model: &str, started: DateTime<Local>) -> Result<RunDir> {
        let base = format!("{}_{}", started.format("%Y%m%d_%H%M%S"), sanitize(model));
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        let mut stem = base.clone();
        let mut n = 1;
        let path = loop {
            let candidate = root.join(&stem);
            match std::fs::create_dir(&candidate) {
                Ok(()) => break candidate,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    n += 1;
                    stem = format!("{base}_{n}");
                }
                Err(e) => return Err(e).with_context(|| format!("creating {}", candidate.display())),
            }
        };
        let log = OpenOptions::new().create(true).append(true).open(path.join(format!("{stem}.log")))?;
        Ok(RunDir { path, stem, log })
    }

    pub fn log_path(&self) -> PathBuf {
        self.path.join(format!("{}.log", self.stem))
    }

    /// Appends a timestamped line to the log (flushed, so a crash keeps it).
    pub fn log(&mut self, line: &str) -> Result<()> {
        let now = Local::now().format("%Y-%m-%d %H:%M:%S");
        for l in line.lines() {
            writeln!(self.log, "{now} {l}")?;
        }
        self.log.flush()?;
        Ok(())
    }

    pub fn write_json<T: Serialize>(&self, file: &str, value: &T) -> Result<PathBuf> {
        let path = self.path.join(file);
        let mut json = serde_json::to_string_pretty(value)?;
        json.push('\n');
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    pub fn write_config<T: Serialize>(&self, config: &T) -> Result<PathBuf> {
        self.write_json("config.json", config)
    }

    /// `metrics.json` and `curves.png`.
    pub fn write_metrics(&self, metrics: &RunMetrics) -> Result<PathBuf> {
        if !metrics.history.is_empty() {
            plots::training_curves(&self.path.join("curves.png"), &metrics.model, &metrics.history)?;
        }
        self.write_json("metrics.json", metrics)
    }

    /// `confusion.csv` and `confusion.png`.
    pub fn write_confusion(&self, cm: &ConfusionMatrix, labels: &[String], title: &str) -> Result<()> {
        std::fs::write(self.path.join("confusion.csv"), cm.to_csv(labels))?;
        plots::confusion_matrix(&self.path.join("confusion.png"), cm, labels, title)
    }
}

fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn run_dir_layout_and_log() {
        let root = std::env::temp_dir().join(format!("kana-runs-{}", std::process::id()));
        let t = Local.with_ymd_and_hms(2026, 11, 22, 21, 5, 9).unwrap();
        let mut run = RunDir::create(&root, "cnn", t).unwrap();
        assert_eq!(run.stem, "20261122_210509_cnn");
        run.log("epoch 1\nloss 0.5").unwrap();
        let log = std::fs::read_to_string(run.log_path()).unwrap();
        assert_eq!(log.lines().count(), 2);
        assert!(log.lines().nth(1).unwrap().ends_with(" loss 0.5"));
        let second = RunDir::create(&root, "cnn", t).unwrap();
        assert_eq!(second.stem, "20261122_210509_cnn_2");

        let history = (1..=3)
            .map(|e| EpochRecord {
                epoch: e,
                train_loss: 1.0 / e as f64,
                train_accuracy: 0.5 + 0.1 * e as f64,
                val_loss: Some(1.1 / e as f64),
                val_accuracy: Some(0.45 + 0.1 * e as f64),
                learning_rate: 1e-3,
                images_per_s: 1000.0,
                seconds: 1.0,
            })
            .collect();
        let metrics = RunMetrics { model: "cnn".into(), dataset: "toy".into(), history, ..Default::default() };
        let path = run.write_metrics(&metrics).unwrap();
        let back: RunMetrics = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(back, metrics);
        assert!(run.path.join("curves.png").exists());
        run.write_config(&serde_json::json!({"epochs": 3})).unwrap();
        assert!(run.path.join("config.json").exists());
        std::fs::remove_dir_all(root).unwrap();
    }
}
