//! The data / evaluation / export subcommands of the `trainer` CLI: `fetch`, `evaluate`,
//! `export` and `synth`. Each is a clap `Args` struct plus a `run` function; `cli.rs` routes.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::data::fetch::{self, FetchOptions, Fetched};
use crate::data::kanjivg;
use crate::data::{Source, Split};
use crate::export::evaluate;

/// `trainer fetch k49` or `trainer fetch kanjivg`
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// `k49` (the dataset, from CODH) or `kanjivg` (stroke SVGs: the PyPI wheel, through pip).
    /// Fashion-MNIST comes from Debian's dataset-fashion-mnist.
    pub dataset: String,
    /// Where to put the files (default: data/k49 or data/kanjivg).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[arg(long, default_value = fetch::K49_BASE_URL)]
    pub base_url: String,
    /// Attempts per file after the first; each resumes where the last one stopped.
    #[arg(long, default_value_t = 4)]
    pub retries: u32,
}

pub fn run_fetch(args: FetchArgs) -> Result<()> {
    if args.dataset == "kanjivg" {
        let dir = args.dir.unwrap_or_else(|| PathBuf::from(kanjivg::KANJIVG_DIR));
        let wheel = kanjivg::fetch_wheel(&dir)?;
        println!("{}: sha256 ok ({})", wheel.display(), kanjivg::ATTRIBUTION);
        return Ok(());
    }
    if args.dataset != "k49" {
        bail!("only `k49` and `kanjivg` can be fetched (Fashion-MNIST: apt-get install dataset-fashion-mnist)");
    }
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(crate::data::K49_DIR));
    let mut opts = FetchOptions::new(&args.base_url, &dir);
    opts.retries = args.retries;
    for (path, what) in fetch::fetch_all(&fetch::k49_files(), &opts)? {
        let what = match what {
            Fetched::AlreadyValid => "already present, md5 ok",
            Fetched::Downloaded => "downloaded, md5 ok",
        };
        println!("{}: {what}", path.display());
    }
    Ok(())
}

/// `trainer evaluate --model models/<name>.card.json --dataset fashion-mnist`
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Model card (`*.card.json`); its ONNX/NNEF file is loaded exactly as the server does.
    #[arg(long)]
    pub model: PathBuf,
    /// fashion-mnist[:dir], k49[:dir] or npz:<dir>/<prefix>.
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: String,
    #[arg(long, value_enum, default_value_t = Split::Test)]
    pub split: Split,
    /// Only the first N images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Also write confusion.csv / confusion.png / report.json here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Store the measured metrics in the card.
    #[arg(long)]
    pub write_card: bool,
}

pub fn run_evaluate(args: EvaluateArgs) -> Result<()> {
    let source = Source::parse(&args.dataset)?;
    let started = std::time::Instant::now();
    let eval = evaluate::evaluate(&args.model, &source, args.split, args.limit)?;
    let seconds = started.elapsed().as_secs_f64();
    let labels: Vec<String> = eval.dataset.classes.iter().map(|c| c.label.clone()).collect();
    println!("{} on {} {} ({} images, {seconds:.1} s)", eval.card.name, eval.dataset.name, args.split.as_str(), eval.dataset.len());
    print!("{}", eval.report.table(&labels));
    if let Some(recorded) = &eval.card.metrics {
        let same = recorded.dataset == eval.dataset.name && recorded.split == args.split.as_str() && recorded.samples == eval.dataset.len();
        println!(
            "card records accuracy {:.4} / balanced {:.4} on {} {} ({} images){}",
            recorded.accuracy,
            recorded.balanced_accuracy,
            recorded.dataset,
            recorded.split,
            recorded.samples,
            if !same {
                " (different data)"
            } else if (recorded.accuracy - eval.report.accuracy).abs() < 1e-12 {
                ": reproduced exactly"
            } else {
                ": DIFFERS from this measurement"
            }
        );
    }
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out)?;
        std::fs::write(out.join("confusion.csv"), eval.confusion.to_csv(&labels))?;
        crate::report::plots::confusion_matrix(
            &out.join("confusion.png"),
            &eval.confusion,
            &labels,
            &format!("{} on {} {}", eval.card.name, eval.dataset.name, args.split.as_str()),
        )?;
        std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&eval.report)? + "\n")?;
        println!("wrote {}", out.display());
    }
    if args.write_card {
        let mut card = eval.card.clone();
        card.metrics = Some(eval.report.card_metrics(&eval.dataset.name, args.split.as_str()));
        crate::export::write_card(&args.model, &card)?;
        println!("metrics written to {}", args.model.display());
    }
    Ok(())
}

/// `trainer export --checkpoint runs/<run>/checkpoint.json --out models`
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Checkpoint written by `trainer train` (`<stem>.json` beside `<stem>.npz`).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Directory for `<name>.onnx`, `<name>.nnef.tgz` and `<name>.card.json`.
    #[arg(long, default_value = "models")]
    pub out: PathBuf,
    /// Model name (URL-safe; default `<dataset>-<model>`).
    #[arg(long)]
    pub name: Option<String>,
    /// Dataset the model was trained on: gives the class labels and the test split the card's
    /// metrics are measured on.
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: String,
    #[arg(long, default_value = "1")]
    pub version: String,
    #[arg(long)]
    pub description: Option<String>,
    /// Another name the model answers to (repeatable), e.g. `--alias cnn`.
    #[arg(long = "alias")]
    pub aliases: Vec<String>,
    /// Write the card without measuring test metrics.
    #[arg(long)]
    pub no_evaluate: bool,
}

pub fn run_export(args: ExportArgs) -> Result<()> {
    let ck = crate::checkpoint::load(&args.checkpoint)?;
    let arch = ck.meta.arch.clone();
    let source = Source::parse(&args.dataset)?;
    // Labels come from the test split (small) so the card and the evaluation agree.
    let test = source.load(Split::Test)?;
    let name = args.name.clone().unwrap_or_else(|| format!("{}-{}", test.name, arch.name));
    let training = training_info(&args.checkpoint, &ck.meta);
    let description = args.description.clone().unwrap_or_else(|| {
        format!("{} trained on {} ({} epochs), exported from {}", arch.name, test.name, ck.meta.progress.epoch, args.checkpoint.display())
    });
    let (training_data, attribution) = source.provenance();
    let info = crate::export::CardInfo {
        name,
        version: args.version.clone(),
        description,
        classes: test.classes.clone(),
        normalization: crate::data::model_normalization(),
        training,
        aliases: args.aliases.clone(),
        training_data,
        attribution,
    };
    let out = crate::export::export(&arch, &ck.weights, info, &args.out)?;
    println!("wrote {}, {}, {}", out.onnx_path.display(), out.nnef_path.display(), out.card_path.display());
    if !args.no_evaluate {
        let eval = evaluate::measure_and_record(&out.card_path, &source, Split::Test)?;
        let labels: Vec<String> = eval.dataset.classes.iter().map(|c| c.label.clone()).collect();
        print!("{}", eval.report.table(&labels));
        println!("metrics written to {}", out.card_path.display());
    }
    Ok(())
}

/// The card's training record, from the checkpoint's config and the run's `metrics.json` beside
/// it. None when either is missing: a card says nothing rather than something made up.
fn training_info(checkpoint: &std::path::Path, meta: &crate::checkpoint::CheckpointMeta) -> Option<kana_inference::card::Training> {
    let metrics_path = checkpoint.with_file_name("metrics.json");
    let metrics: crate::report::RunMetrics = serde_json::from_str(&std::fs::read_to_string(metrics_path).ok()?).ok()?;
    let c = &meta.config;
    let images: f64 = metrics.history.iter().map(|h| h.images_per_s * h.seconds).sum();
    let seconds: f64 = metrics.history.iter().map(|h| h.seconds).sum();
    Some(kana_inference::card::Training {
        command: c.get("command")?.as_str()?.to_string(),
        architecture: meta.arch.name.clone(),
        parameters: crate::model::parameter_count(&meta.arch),
        epochs: meta.progress.epoch,
        backend: c.get("backend")?.as_str()?.to_string(),
        adapter: c.get("adapter").and_then(|a| a.as_str()).unwrap_or("").to_string(),
        wall_time_s: metrics.wall_time_s,
        images_per_s: if seconds > 0.0 { images / seconds } else { 0.0 },
        created_at: chrono::Local::now().to_rfc3339(),
        seed: c.get("seed")?.as_u64()?,
    })
}

/// `trainer synth kana --out data/kana-synth`
#[derive(Debug, Args)]
pub struct SynthArgs {
    /// What to synthesise (only `kana`: the 49 K49 hiragana classes).
    pub what: String,
    #[arg(long, default_value = "data/kana-synth")]
    pub out: PathBuf,
    /// File prefix: `<prefix>-{train,test}-{imgs,labels}.npz` (train with `--dataset npz:<out>/<prefix>`).
    #[arg(long, default_value = "kana")]
    pub prefix: String,
    #[arg(long, default_value_t = 1000)]
    pub train_per_class: usize,
    #[arg(long, default_value_t = 200)]
    pub test_per_class: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to look for Japanese fonts (recursively).
    #[arg(long, default_value = "/usr/share/fonts")]
    pub fonts: Vec<PathBuf>,
    /// Font families (package folders) only the test split uses.
    #[arg(long, value_delimiter = ',', default_values_t = crate::data::synth::TEST_FONT_FAMILIES.map(String::from))]
    pub test_fonts: Vec<String>,
    /// KanjiVG wheel with the stroke SVGs (`trainer fetch kanjivg`); `none` for fonts only.
    #[arg(long, default_value = "data/kanjivg/kanjivg-20260714-py3-none-any.whl")]
    pub kanjivg: String,
    /// Share of images drawn from strokes; the rest are printed in fonts.
    #[arg(long, default_value_t = 0.5)]
    pub stroke_fraction: f64,
}

pub fn run_synth(args: SynthArgs) -> Result<()> {
    use crate::data::synth;
    if args.what != "kana" {
        bail!("only `kana` can be synthesised");
    }
    let fonts = synth::find_fonts(&args.fonts);
    println!("{} font faces cover all 49 K49 characters", fonts.len());
    let strokes = if args.kanjivg == "none" {
        None
    } else {
        let wheel = PathBuf::from(&args.kanjivg);
        kanjivg::verify_wheel(&wheel).map_err(|e| anyhow::anyhow!("{e:#} (get it with `trainer fetch kanjivg`, or pass --kanjivg none)"))?;
        Some(kanjivg::load_from_wheel(&wheel, &synth::k49_chars())?)
    };
    let opts = synth::SynthOptions {
        train_per_class: args.train_per_class,
        test_per_class: args.test_per_class,
        seed: args.seed,
        stroke_fraction: args.stroke_fraction,
        test_font_families: args.test_fonts.clone(),
    };
    let report = synth::synthesize(&fonts, strokes.as_deref(), &args.out, &args.prefix, &opts)?;
    for (name, split) in [("train", &report.train), ("test", &report.test)] {
        println!("{name}: {} images ({} strokes, {} fonts); styles {}; font families {}", split.images, split.stroke_images,
            split.font_images, split.plan.styles.join(", "), split.plan.font_families.join(", "));
    }
    let sheet = args.out.join(format!("{}-samples.png", args.prefix));
    synth_samples_sheet(&args.out, &args.prefix, &sheet)?;
    println!("wrote {} ({}-README.md says what is in it, {} shows samples); train with --dataset npz:{}/{}",
        args.out.display(), args.prefix, sheet.display(), args.out.display(), args.prefix);
    Ok(())
}

/// 60 training and 40 test images of a synthetic pair, each with its split and label.
fn synth_samples_sheet(dir: &std::path::Path, prefix: &str, out: &std::path::Path) -> Result<()> {
    use crate::report::sheet::{Tile, contact_sheet};
    let source = Source::NpzPair { dir: dir.to_path_buf(), prefix: prefix.to_string() };
    let mut tiles = Vec::new();
    for (split, count) in [(Split::Train, 60), (Split::Test, 40)] {
        let ds = source.load(split)?;
        for i in 0..count.min(ds.len()) {
            let pixels = ds.images.index_axis(ndarray::Axis(0), i).iter().copied().collect();
            let label = &ds.classes[ds.labels[i] as usize].label;
            tiles.push(Tile { pixels, captions: vec![format!("{} {label}", split.as_str())], highlight: None });
        }
    }
    contact_sheet(out, &format!("{prefix}: first 60 train and 40 test images"), &tiles, 28, 10)?;
    Ok(())
}

/// `trainer sheet --images fixtures/k49/test_images_100.npz --model models/<a>.card.json ... --out sheet.png`
#[derive(Debug, Args)]
pub struct SheetArgs {
    /// Images to show: an npz (uint8, [N, 28, 28]) as the server accepts it.
    #[arg(long)]
    pub images: PathBuf,
    /// Model cards whose top-1 prediction and probability go under each image (repeatable).
    #[arg(long)]
    pub model: Vec<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 10)]
    pub columns: usize,
    #[arg(long)]
    pub title: Option<String>,
}

/// A contact sheet of real (or any) images with each model's answer, run exactly as the server
/// runs it (`kana_inference` decoding and plans).
pub fn run_sheet(args: SheetArgs) -> Result<()> {
    use crate::report::sheet::{Tile, contact_sheet};
    let body = std::fs::read(&args.images).with_context(|| format!("reading {}", args.images.display()))?;
    let limits = kana_inference::Limits { max_images: 100_000, max_body_bytes: body.len() };
    let images = kana_inference::decode_upload(Some("application/x-npz"), &body, 28, 28, &limits).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut tiles: Vec<Tile> = (0..images.count)
        .map(|i| Tile { pixels: images.image(i).iter().map(|&p| p.round().clamp(0.0, 255.0) as u8).collect(), captions: vec![], highlight: None })
        .collect();
    let mut names = Vec::new();
    for card_path in &args.model {
        let card = crate::export::read_card(card_path)?;
        let short = card.aliases.first().cloned().unwrap_or_else(|| card.name.clone());
        names.push(format!("{short} = {}", card.name));
        let dir = card_path.parent().unwrap_or(std::path::Path::new("."));
        let model = kana_inference::Model::load(card, dir).map_err(|e| anyhow::anyhow!("{}: {e}", card_path.display()))?;
        let predictions = model.predict(&images, 1).map_err(|e| anyhow::anyhow!("{e}"))?;
        for (tile, p) in tiles.iter_mut().zip(&predictions) {
            let label = &model.card.classes[p.class].label;
            tile.captions.push(format!("{short} {label} {:.2}", p.probability));
        }
    }
    let title = args.title.clone().unwrap_or_else(|| format!("{} — {}", args.images.display(), names.join(", ")));
    let font = contact_sheet(&args.out, &title, &tiles, 28, args.columns)?;
    println!("wrote {} ({} images; caption font {})", args.out.display(), tiles.len(), font.map_or("DejaVu Sans (no Japanese font found)".into(), |f| f.display().to_string()));
    Ok(())
}
