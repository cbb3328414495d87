//! The training loop, the same for both backends: seeded epoch order, augmentation, one-cycle
//! learning rate, validation each epoch, checkpoints (every epoch and on Ctrl-C), `--resume`,
//! then test evaluation, the run directory report and the ONNX/NNEF/card export.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array2, Array3, ArrayView3, Axis};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::arch::{Architecture, Weights};
use crate::checkpoint::{self, CheckpointMeta, Progress};
use crate::data::{Dataset, Sampling, Source, Split};
use crate::gpu;
use crate::kernels::augment::{self, AugmentParams};
use crate::kernels::{Kernels, rng, softmax_xent};
use crate::metrics::ConfusionMatrix;
use crate::model::{self, cpu, gpu::GpuModel, gpu::GpuTrainConfig};
use crate::optim::{CpuOptimizer, OptimConfig, lr_at};
use crate::report::{EpochRecord, RunDir, RunMetrics};

/// Everything that defines a run (written to the run directory as config.json).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    pub dataset: String,
    pub model: String,
    pub epochs: usize,
    pub batch: usize,
    pub optim: OptimConfig,
    /// Fraction of the run spent warming the learning rate up (then cosine to 0).
    pub warmup: f32,
    pub label_smoothing: f32,
    pub augment: AugmentParams,
    pub val_fraction: f64,
    pub sampling: Sampling,
    pub seed: u64,
    /// `cpu` or a wgpu backend name (vulkan|metal|dx12|gl|all).
    pub backend: String,
    pub adapter: Option<String>,
    /// Root of run directories.
    pub runs_dir: PathBuf,
    /// Where the exported model goes (None: only the run directory).
    pub export_dir: Option<PathBuf>,
    /// Name of the exported model (card name); default "<dataset>-<model>".
    pub export_name: Option<String>,
    /// Other names the exported model answers to (`/predict/<alias>`).
    pub aliases: Vec<String>,
    /// Only the first N training images (smoke tests).
    pub limit: Option<usize>,
    /// Start from this checkpoint's weights (fresh optimiser and schedule); None: random init.
    #[serde(default)]
    pub init: Option<PathBuf>,
    /// The command line, recorded in the model card.
    pub command: String,
}

/// Seed of the augmentation stream for a step (dropout uses streams 0..).
pub fn augment_seed(step_seed: u32) -> u32 {
    rng::derive_seed(step_seed as u64, u64::MAX)
}

/// A training backend: runs steps, reports accumulated loss/accuracy, predicts in eval mode.
pub trait Engine {
    /// `raw` is [B, H, W] pixels in [0, 1].
    fn step(&mut self, raw: ArrayView3<f32>, labels: &[u32], lr: f32, first_index: u32, step_seed: u32);
    /// (Σ loss, Σ correct) since the last call.
    fn take_metrics(&mut self) -> (f64, f64);
    fn predict(&mut self, raw: ArrayView3<f32>) -> Array2<f32>;
    fn weights(&self) -> Weights;
    fn optimizer_state(&self) -> (Weights, u32);
    fn load_optimizer_state(&mut self, state: &Weights, step: u32);
    /// (backend, adapter) for logs and cards.
    fn device(&self) -> (String, String);
    /// Fixed batch the engine was built for (None: any).
    fn fixed_batch(&self) -> Option<usize>;
}

pub struct CpuEngine {
    arch: Architecture,
    weights: Weights,
    optim: CpuOptimizer,
    augment: AugmentParams,
    smoothing: f32,
    sums: (f64, f64),
}

impl CpuEngine {
    pub fn new(arch: &Architecture, weights: Weights, optim: OptimConfig, augment: AugmentParams, smoothing: f32) -> Self {
        Self { arch: arch.clone(), weights, optim: CpuOptimizer::new(arch, optim), augment, smoothing, sums: (0.0, 0.0) }
    }
}

impl Engine for CpuEngine {
    fn step(&mut self, raw: ArrayView3<f32>, labels: &[u32], lr: f32, first_index: u32, step_seed: u32) {
        let x = augment::cpu_apply(raw, &self.augment, augment_seed(step_seed), first_index);
        let (logits, caches) = cpu::forward_train(&self.arch, &mut self.weights, x.view(), step_seed);
        let out = softmax_xent::cpu_forward_backward(logits.view(), labels, self.smoothing);
        self.sums.0 += out.loss.sum() as f64;
        self.sums.1 += out.correct.sum() as f64;
        let grads = cpu::backward(&self.arch, &self.weights, caches, out.dlogits);
        self.optim.update(&mut self.weights, &grads, lr);
    }
    fn take_metrics(&mut self) -> (f64, f64) {
        std::mem::take(&mut self.sums)
    }
    fn predict(&mut self, raw: ArrayView3<f32>) -> Array2<f32> {
        let x = augment::cpu_apply(raw, &AugmentParams::none(self.augment.mean, self.augment.std), 0, 0);
        cpu::forward_eval(&self.arch, &self.weights, x.view())
    }
    fn weights(&self) -> Weights {
        self.weights.clone()
    }
    fn optimizer_state(&self) -> (Weights, u32) {
        (self.optim.state(), self.optim.step)
    }
    fn load_optimizer_state(&mut self, state: &Weights, step: u32) {
        self.optim.load_state(state, step);
    }
    fn device(&self) -> (String, String) {
        ("cpu".into(), format!("ndarray+rayon ({} threads)", rayon::current_num_threads()))
    }
    fn fixed_batch(&self) -> Option<usize> {
        None
    }
}

pub struct GpuEngine {
    pub model: GpuModel,
}

impl Engine for GpuEngine {
    fn step(&mut self, raw: ArrayView3<f32>, labels: &[u32], lr: f32, first_index: u32, step_seed: u32) {
        self.model.train_step(raw, labels, lr, first_index, step_seed);
    }
    fn take_metrics(&mut self) -> (f64, f64) {
        self.model.take_metrics()
    }
    fn predict(&mut self, raw: ArrayView3<f32>) -> Array2<f32> {
        let b = self.model.config.batch;
        let mut rows = Vec::new();
        for start in (0..raw.dim().0).step_by(b) {
            let end = (start + b).min(raw.dim().0);
            rows.push(self.model.predict(raw.slice(ndarray::s![start..end, .., ..])));
        }
        ndarray::concatenate(Axis(0), &rows.iter().map(|a| a.view()).collect::<Vec<_>>()).expect("same widths")
    }
    fn weights(&self) -> Weights {
        self.model.weights()
    }
    fn optimizer_state(&self) -> (Weights, u32) {
        self.model.optimizer_state()
    }
    fn load_optimizer_state(&mut self, state: &Weights, step: u32) {
        self.model.set_optimizer_state(state, step);
    }
    fn device(&self) -> (String, String) {
        (format!("{:?}", self.model.gpu.info.backend).to_lowercase(), self.model.gpu.info.name.clone())
    }
    fn fixed_batch(&self) -> Option<usize> {
        Some(self.model.config.batch)
    }
}

/// Builds the engine `config.backend` names.
pub fn engine(config: &TrainConfig, arch: &Architecture, weights: Weights) -> Result<Box<dyn Engine>> {
    if config.backend == "cpu" {
        return Ok(Box::new(CpuEngine::new(arch, weights, config.optim, config.augment, config.label_smoothing)));
    }
    let g = gpu::open(gpu::parse_backend(&config.backend)?, config.adapter.as_deref())?;
    let kernels = Kernels::new(&g);
    let cfg = GpuTrainConfig { batch: config.batch, optim: config.optim, smoothing: config.label_smoothing, augment: config.augment };
    Ok(Box::new(GpuEngine { model: GpuModel::new(g, &kernels, arch, &weights, cfg)? }))
}

/// Pixels of `rows` as [B, H, W] floats in [0, 1].
pub fn raw_batch(data: &Dataset, rows: &[usize]) -> Array3<f32> {
    let [h, w] = data.image_size();
    let mut out = Array3::<f32>::zeros((rows.len(), h, w));
    for (b, &r) in rows.iter().enumerate() {
        out.index_axis_mut(Axis(0), b).zip_mut_with(&data.images.index_axis(Axis(0), r), |d, &p| *d = p as f32 / 255.0);
    }
    out
}

/// Eval-mode confusion matrix and mean (unsmoothed) cross-entropy over a whole dataset.
pub fn evaluate(engine: &mut dyn Engine, data: &Dataset, batch: usize) -> (ConfusionMatrix, f64) {
    let mut cm = ConfusionMatrix::new(data.num_classes());
    let mut loss = 0.0;
    let rows: Vec<usize> = (0..data.len()).collect();
    for chunk in rows.chunks(batch.max(1)) {
        let logits = engine.predict(raw_batch(data, chunk).view());
        let labels: Vec<u32> = chunk.iter().map(|&r| data.labels[r] as u32).collect();
        loss += softmax_xent::cpu_forward_backward(logits.view(), &labels, 0.0).loss.sum() as f64;
        cm.add_logits(&labels, logits.view());
    }
    (cm, loss / data.len().max(1) as f64)
}

/// What a finished run reports.
pub struct Outcome {
    pub run_dir: PathBuf,
    pub test_accuracy: f64,
    pub card: Option<PathBuf>,
    pub interrupted: bool,
}

/// Trains per `config` (optionally resuming a checkpoint). Returns after export, or early (with a
/// checkpoint written) when `stop` is set, e.g. by Ctrl-C.
pub fn run(config: &TrainConfig, resume: Option<PathBuf>, stop: Arc<AtomicBool>) -> Result<Outcome> {
    let started = Instant::now();
    let source = Source::parse(&config.dataset)?;
    let mut train_all = source.load(Split::Train)?;
    if let Some(n) = config.limit {
        train_all = train_all.take(n);
    }
    let test = source.load(Split::Test)?;
    let (train, val) = if config.val_fraction > 0.0 {
        let (t, v) = train_all.split_validation(config.val_fraction, config.seed)?;
        (t, Some(v))
    } else {
        (train_all, None)
    };
    let [h, w] = train.image_size();
    let arch = model::zoo(&config.model, [1, h, w], train.num_classes())
        .with_context(|| format!("unknown model {:?} (known: {:?})", config.model, model::ZOO))?;
    let load = |path: &PathBuf| -> Result<checkpoint::Checkpoint> {
        let ck = checkpoint::load(path)?;
        if ck.meta.arch != arch {
            bail!("checkpoint {} is a different architecture", path.display());
        }
        Ok(ck)
    };
    let (weights, resumed) = match (&resume, &config.init) {
        (Some(path), _) => {
            let ck = load(path)?;
            (ck.weights.clone(), Some(ck))
        }
        (None, Some(path)) => (load(path)?.weights, None),
        (None, None) => (model::init_weights(&arch, config.seed), None),
    };
    let mut engine = engine(config, &arch, weights)?;
    let mut progress = Progress { epoch: 0, batch: 0, step: 0 };
    if let Some(ck) = &resumed {
        engine.load_optimizer_state(&ck.optimizer, ck.meta.progress.step);
        progress = ck.meta.progress.clone();
    }
    let (backend, adapter) = engine.device();
    let mut run = RunDir::create(&config.runs_dir, &config.model, chrono::Local::now())?;
    run.write_config(config)?;
    let params = model::parameter_count(&arch);
    run.log(&format!(
        "{} ({params} parameters) on {} train / {} val / {} test images of {}; backend {backend} ({adapter})",
        arch.name,
        train.len(),
        val.as_ref().map_or(0, |v| v.len()),
        test.len(),
        train.name
    ))?;
    if let (None, Some(path)) = (&resumed, &config.init) {
        run.log(&format!("weights initialised from {}; fresh optimiser and learning-rate cycle", path.display()))?;
    }
    if let Some(ck) = &resumed {
        run.log(&format!("resumed from {} at epoch {} batch {}", resume.as_ref().unwrap().display(), ck.meta.progress.epoch, ck.meta.progress.batch))?;
    }

    let batch = config.batch;
    let steps_per_epoch = train.len() / batch; // the last partial batch is dropped (fixed GPU graphs)
    if steps_per_epoch == 0 {
        bail!("batch {batch} is larger than the {} training images", train.len());
    }
    let total_steps = steps_per_epoch * config.epochs;
    let checkpoint_path = run.path.join("checkpoint.json");
    let mut metrics = RunMetrics { model: arch.name.clone(), dataset: train.name.clone(), ..Default::default() };
    let mut images_seen = 0usize;
    let mut train_time = 0.0f64;
    let save = |engine: &dyn Engine, progress: &Progress| -> Result<()> {
        let (opt, _) = engine.optimizer_state();
        let meta = CheckpointMeta { arch: arch.clone(), progress: progress.clone(), config: serde_json::to_value(config)?, weights_file: String::new() };
        checkpoint::save(&checkpoint_path, &meta, &engine.weights(), &opt)
    };

    while progress.epoch < config.epochs {
        let epoch = progress.epoch;
        let mut order_rng = StdRng::seed_from_u64(config.seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9));
        let order = train.epoch_order(config.sampling, &mut order_rng);
        let bar = ProgressBar::new((steps_per_epoch * batch) as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {human_pos}/{human_len} img {per_sec} ETA {eta} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("epoch {}/{}", epoch + 1, config.epochs));
        let epoch_start = Instant::now();
        let (mut loss_sum, mut correct_sum, mut counted) = (0.0, 0.0, 0usize);
        engine.take_metrics();
        let mut lr = 0.0;
        for b in progress.batch..steps_per_epoch {
            let rows = &order[b * batch..(b + 1) * batch];
            let labels: Vec<u32> = rows.iter().map(|&r| train.labels[r] as u32).collect();
            lr = lr_at(config.optim.lr, progress.step as usize, total_steps, config.warmup);
            let step_seed = rng::derive_seed(config.seed, progress.step as u64);
            let first_index = (epoch * steps_per_epoch * batch + b * batch) as u32;
            engine.step(raw_batch(&train, rows).view(), &labels, lr, first_index, step_seed);
            progress.step += 1;
            progress.batch = b + 1;
            counted += batch;
            bar.inc(batch as u64);
            // Reading metrics syncs with the device: every 20 steps is enough for the bar.
            if (b + 1) % 20 == 0 || b + 1 == steps_per_epoch {
                let (l, c) = engine.take_metrics();
                loss_sum += l;
                correct_sum += c;
                bar.set_message(format!("loss {:.4} acc {:.4} lr {lr:.2e}", loss_sum / counted as f64, correct_sum / counted as f64));
            }
            if stop.load(Ordering::SeqCst) {
                bar.abandon_with_message("interrupted");
                save(engine.as_ref(), &progress)?;
                run.log(&format!("interrupted at epoch {} batch {}; checkpoint {}", epoch + 1, b + 1, checkpoint_path.display()))?;
                return Ok(Outcome { run_dir: run.path.clone(), test_accuracy: f64::NAN, card: None, interrupted: true });
            }
        }
        let (l, c) = engine.take_metrics();
        loss_sum += l;
        correct_sum += c;
        bar.finish();
        let seconds = epoch_start.elapsed().as_secs_f64();
        train_time += seconds;
        images_seen += counted;
        let (val_loss, val_accuracy) = match &val {
            Some(v) => {
                let (cm, loss) = evaluate(engine.as_mut(), v, batch.max(256));
                (Some(loss), Some(cm.report().accuracy))
            }
            None => (None, None),
        };
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: loss_sum / counted.max(1) as f64,
            train_accuracy: correct_sum / counted.max(1) as f64,
            val_loss,
            val_accuracy,
            learning_rate: lr as f64,
            images_per_s: counted as f64 / seconds,
            seconds,
        };
        run.log(&format!(
            "epoch {}/{}: train loss {:.4} acc {:.4}, val loss {} acc {}, {:.0} img/s, {seconds:.1} s",
            epoch + 1,
            config.epochs,
            record.train_loss,
            record.train_accuracy,
            val_loss.map_or("-".into(), |v| format!("{v:.4}")),
            val_accuracy.map_or("-".into(), |v| format!("{v:.4}")),
            record.images_per_s
        ))?;
        metrics.history.push(record);
        progress.epoch += 1;
        progress.batch = 0;
        save(engine.as_ref(), &progress)?;
    }

    let labels: Vec<String> = test.classes.iter().map(|c| c.label.clone()).collect();
    let (cm, test_loss) = evaluate(engine.as_mut(), &test, batch.max(256));
    let report = cm.report();
    run.log(&format!("test ({} images): loss {test_loss:.4}\n{}", test.len(), report.table(&labels)))?;
    run.write_confusion(&cm, &labels, &format!("{} {} test", arch.name, test.name))?;
    if let Some(v) = &val {
        metrics.validation = Some(evaluate(engine.as_mut(), v, batch.max(256)).0.report());
    }
    metrics.test = Some(report.clone());
    metrics.wall_time_s = started.elapsed().as_secs_f64();
    crate::report::plots::training_curves(&run.path.join("curves.png"), &format!("{} on {}", arch.name, train.name), &metrics.history)?;
    run.write_metrics(&metrics)?;
    let weights = engine.weights();

    let card = match &config.export_dir {
        Some(dir) => {
            let name = config.export_name.clone().unwrap_or_else(|| format!("{}-{}", test.name, arch.name));
            let training = kana_inference::card::Training {
                command: config.command.clone(),
                architecture: arch.name.clone(),
                parameters: params,
                epochs: config.epochs,
                backend: backend.clone(),
                adapter: adapter.clone(),
                wall_time_s: metrics.wall_time_s,
                images_per_s: images_seen as f64 / train_time.max(1e-9),
                created_at: chrono::Local::now().to_rfc3339(),
                seed: config.seed,
            };
            let (training_data, attribution) = source.provenance();
            let info = crate::export::CardInfo {
                name: name.clone(),
                version: "1".into(),
                description: match &config.init {
                    None => format!("{} trained on {} ({} epochs, {backend})", arch.name, test.name, config.epochs),
                    Some(from) => format!("{} fine-tuned on {} from {} ({} more epochs, {backend})", arch.name, test.name, from.display(), config.epochs),
                },
                classes: test.classes.clone(),
                normalization: crate::data::model_normalization(),
                training: Some(training),
                aliases: config.aliases.clone(),
                training_data,
                attribution,
            };
            let exported = crate::export::export(&arch, &weights, info, dir)?;
            let eval = crate::export::evaluate::measure_and_record(&exported.card_path, &source, Split::Test)?;
            run.log(&format!(
                "exported {} (ONNX via tract: test accuracy {:.4}, trainer: {:.4})",
                exported.card_path.display(),
                eval.report.accuracy,
                report.accuracy
            ))?;
            Some(exported.card_path)
        }
        None => None,
    };
    run.log(&format!("done in {:.1} s; run directory {}", metrics.wall_time_s, run.path.display()))?;
    Ok(Outcome { run_dir: run.path.clone(), test_accuracy: report.accuracy, card, interrupted: false })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::npz;

    /// Three classes of 12x12 images: a bright band in the top, middle or bottom third.
    fn write_bands(dir: &std::path::Path, split: Split, n: usize) {
        let mut images = Array3::<u8>::zeros((n, 12, 12));
        let labels: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
        for (i, &label) in labels.iter().enumerate() {
            for r in 0..12 {
                for c in 0..12 {
                    let band = r / 4 == label as usize;
                    let noise = ((i * 31 + r * 7 + c * 13) % 40) as u8;
                    images[[i, r, c]] = if band { 200 + noise } else { noise };
                }
            }
        }
        npz::write_pair(dir, "bands", split, &images, &labels).unwrap();
    }

    fn config(root: &std::path::Path, model: &str, epochs: usize, init: Option<PathBuf>) -> TrainConfig {
        TrainConfig {
            dataset: format!("npz:{}/bands", root.join("data").display()),
            model: model.into(),
            epochs,
            batch: 16,
            optim: OptimConfig { kind: crate::optim::OptimizerKind::Adamw, lr: 3e-3, weight_decay: 5e-4, momentum: 0.9 },
            warmup: 0.1,
            label_smoothing: 0.0,
            augment: AugmentParams { erase_px: 0.0, ..AugmentParams::none(model::NORM_MEAN, model::NORM_STD) },
            val_fraction: 0.0,
            sampling: Sampling::Shuffle,
            seed: 3,
            backend: "cpu".into(),
            adapter: None,
            runs_dir: root.join("runs"),
            export_dir: None,
            export_name: None,
            aliases: Vec::new(),
            limit: None,
            init,
            command: "test".into(),
        }
    }

    #[test]
    fn init_starts_from_a_checkpoints_weights() {
        let root = std::env::temp_dir().join(format!("kana-train-init-{}", std::process::id()));
        write_bands(&root.join("data"), Split::Train, 96);
        write_bands(&root.join("data"), Split::Test, 48);
        let stop = Arc::new(AtomicBool::new(false));

        let trained = run(&config(&root, "cnn", 4, None), None, stop.clone()).unwrap();
        assert!(trained.test_accuracy >= 0.9, "the toy task was not learned: {}", trained.test_accuracy);
        let checkpoint = trained.run_dir.join("checkpoint.json");

        // No further epochs: the test split sees exactly the checkpoint's weights...
        let loaded = run(&config(&root, "cnn", 0, Some(checkpoint.clone())), None, stop.clone()).unwrap();
        assert_eq!(loaded.test_accuracy, trained.test_accuracy);
        // ...and not a fresh initialisation.
        let fresh = run(&config(&root, "cnn", 0, None), None, stop.clone()).unwrap();
        assert!(fresh.test_accuracy < 0.9, "an untrained cnn scored {}", fresh.test_accuracy);

        let wrong = run(&config(&root, "resnet", 1, Some(checkpoint)), None, stop).err().expect("a cnn checkpoint must not load into resnet");
        assert!(format!("{wrong:#}").contains("different architecture"), "{wrong:#}");
        std::fs::remove_dir_all(root).unwrap();
    }
}
