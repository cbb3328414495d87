//! The `trainer` command line: `devices`, `train` (here) and the data/evaluation/export
//! subcommands from [`crate::cli_io`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::data::Sampling;
use crate::kernels::augment::AugmentParams;
use crate::model::{NORM_MEAN, NORM_STD};
use crate::optim::{OptimConfig, OptimizerKind};
use crate::train::{self, TrainConfig};

#[derive(Debug, Parser)]
#[command(name = "trainer", version, about = "Train, evaluate and export kana-edge classifiers (wgpu or CPU)")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every adapter wgpu finds (backend, name, type).
    Devices,
    /// Train a model, evaluate it on the test split and export ONNX + NNEF + card.
    Train(TrainArgs),
    /// Download a dataset (k49).
    Fetch(crate::cli_io::FetchArgs),
    /// Evaluate an exported model card on a dataset.
    Evaluate(crate::cli_io::EvaluateArgs),
    /// Export a checkpoint as ONNX + NNEF + model card (metrics measured on the exported file).
    Export(crate::cli_io::ExportArgs),
    /// Render a synthetic K49-layout hiragana dataset (KanjiVG strokes + the installed Japanese fonts).
    Synth(crate::cli_io::SynthArgs),
    /// Draw a contact sheet of images with each model's top-1 prediction.
    Sheet(crate::cli_io::SheetArgs),
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// fashion-mnist[:dir], k49[:dir] or npz:<dir>/<prefix>.
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: String,
    /// Model from the zoo: cnn | resnet | resnet-wide.
    #[arg(long, default_value = "cnn")]
    pub model: String,
    #[arg(long, default_value_t = 15)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    #[arg(long, value_enum, default_value_t = OptimizerKind::Adamw)]
    pub optimizer: OptimizerKind,
    /// Peak learning rate (one-cycle: warm-up then cosine decay).
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f32,
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f32,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    #[arg(long, default_value_t = 0.1)]
    pub warmup: f32,
    #[arg(long, default_value_t = 0.1)]
    pub label_smoothing: f32,
    /// Max random rotation in degrees (0 disables).
    #[arg(long, default_value_t = 8.0)]
    pub rotate: f32,
    /// Max relative random scale change.
    #[arg(long, default_value_t = 0.08)]
    pub scale: f32,
    /// Max random shift in pixels.
    #[arg(long, default_value_t = 2.0)]
    pub shift: f32,
    /// Random horizontal mirror (Fashion-MNIST: yes; characters: no).
    #[arg(long)]
    pub flip: bool,
    /// Side in pixels of a random square erased on half the training images (cutout; 0: off).
    #[arg(long, default_value_t = 0.0)]
    pub erase: f32,
    /// Fraction of the training set held out for per-epoch validation.
    #[arg(long, default_value_t = 0.05)]
    pub val_fraction: f64,
    /// Epoch order: shuffle, or balanced (class-balanced draws, for imbalanced sets like K49).
    #[arg(long, value_enum, default_value_t = Sampling::Shuffle)]
    pub sampling: Sampling,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu | vulkan | metal | dx12 | gl | all (any wgpu adapter).
    #[arg(long, default_value = "all")]
    pub backend: String,
    /// Pick the wgpu adapter whose name contains this (case-insensitive).
    #[arg(long)]
    pub adapter: Option<String>,
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Export ONNX + NNEF + card here after training.
    #[arg(long, default_value = "models")]
    pub export_dir: PathBuf,
    /// Skip the export.
    #[arg(long)]
    pub no_export: bool,
    /// Exported model name (default <dataset>-<model>).
    #[arg(long)]
    pub name: Option<String>,
    /// Another name the exported model answers to (repeatable), e.g. `--alias cnn`.
    #[arg(long = "alias")]
    pub aliases: Vec<String>,
    /// Only the first N training images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Continue from a checkpoint (`runs/<run>/checkpoint.json`).
    #[arg(long, conflicts_with = "init")]
    pub resume: Option<PathBuf>,
    /// Start from a checkpoint's weights with a fresh optimiser and learning-rate cycle
    /// (fine-tuning, or a warm restart of a finished run).
    #[arg(long)]
    pub init: Option<PathBuf>,
}

impl TrainArgs {
    pub fn config(&self) -> TrainConfig {
        TrainConfig {
            dataset: self.dataset.clone(),
            model: self.model.clone(),
            epochs: self.epochs,
            batch: self.batch,
            optim: OptimConfig { kind: self.optimizer, lr: self.lr, weight_decay: self.weight_decay, momentum: self.momentum },
            warmup: self.warmup,
            label_smoothing: self.label_smoothing,
            augment: AugmentParams { rotate_deg: self.rotate, scale: self.scale, shift_px: self.shift, flip: self.flip, erase_px: self.erase, mean: NORM_MEAN, std: NORM_STD },
            val_fraction: self.val_fraction,
            sampling: self.sampling,
            seed: self.seed,
            backend: self.backend.clone(),
            adapter: self.adapter.clone(),
            runs_dir: self.runs_dir.clone(),
            export_dir: (!self.no_export).then(|| self.export_dir.clone()),
            export_name: self.name.clone(),
            aliases: self.aliases.clone(),
            limit: self.limit,
            init: self.init.clone(),
            command: command_line(),
        }
    }
}

/// The command as a user would retype it: `trainer <args>`, whatever path the binary ran from
/// (cards are committed; a build machine's paths do not belong in them).
pub fn command_line() -> String {
    std::iter::once("trainer".to_owned()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" ")
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Devices => {
            let adapters = crate::gpu::list_adapters(wgpu::Backends::all());
            println!("backend\tname\ttype");
            for info in &adapters {
                println!("{}", crate::gpu::describe(info));
            }
            println!("cpu\tndarray reference ({} threads)\tCpu", rayon::current_num_threads());
            Ok(())
        }
        Command::Train(args) => {
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            // First Ctrl-C: finish the current step, write a checkpoint, exit. Second: hard exit.
            ctrlc::set_handler(move || {
                if flag.swap(true, Ordering::SeqCst) {
                    std::process::exit(130);
                }
                eprintln!("\ninterrupt: writing a checkpoint after this step (Ctrl-C again to abort)");
            })?;
            let outcome = train::run(&args.config(), args.resume.clone(), stop)?;
            if outcome.interrupted {
                println!("interrupted; resume with --resume {}", outcome.run_dir.join("checkpoint.json").display());
                std::process::exit(130);
            }
            println!("test accuracy {:.4}; run directory {}", outcome.test_accuracy, outcome.run_dir.display());
            if let Some(card) = outcome.card {
                println!("model card {}", card.display());
            }
            Ok(())
        }
        Command::Fetch(args) => crate::cli_io::run_fetch(args),
        Command::Evaluate(args) => crate::cli_io::run_evaluate(args),
        Command::Export(args) => crate::cli_io::run_export(args),
        Command::Synth(args) => crate::cli_io::run_synth(args),
        Command::Sheet(args) => crate::cli_io::run_sheet(args),
    }
}
