//! The data / evaluation / export subcommands of the `trainer` CLI: `fetch`, `evaluate`,
//! `export` and `synth`. Each is a clap `Args` struct plus a `run` function; `cli.rs` routes.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use crate::data::fetch::{self, FetchOptions, Fetched};
use crate::data::{Source, Split};
use crate::export::evaluate;

/// `trainer fetch k49`
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Dataset to download (only `k49`: Fashion-MNIST comes from Debian's dataset-fashion-mnist).
    pub dataset: String,
    #[arg(long, default_value = crate::data::K49_DIR)]
    pub dir: PathBuf,
    #[arg(long, default_value = fetch::K49_BASE_URL)]
    pub base_url: String,
    /// Attempts per file after the first; each resumes where the last one stopped.
    #[arg(long, default_value_t = 4)]
    pub retries: u32,
}

pub fn run_fetch(args: FetchArgs) -> Result<()> {
    if args.dataset != "k49" {
        bail!("only `k49` can be fetched (Fashion-MNIST: apt-get install dataset-fashion-mnist)");
    }
    let mut opts = FetchOptions::new(&args.base_url, &args.dir);
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
    let info = crate::export::CardInfo {
        name,
        version: args.version.clone(),
        description,
        classes: test.classes.clone(),
        normalization: crate::data::model_normalization(),
        training,
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
}

pub fn run_synth(args: SynthArgs) -> Result<()> {
    use crate::data::synth;
    if args.what != "kana" {
        bail!("only `kana` can be synthesised");
    }
    let fonts = synth::find_fonts(&args.fonts);
    println!("{} fonts cover all 49 K49 characters", fonts.len());
    let opts = synth::SynthOptions { train_per_class: args.train_per_class, test_per_class: args.test_per_class, seed: args.seed };
    for (split, n) in synth::synthesize(&fonts, &args.out, &args.prefix, &opts)? {
        println!("{}: {n} images", split.as_str());
    }
    println!("wrote {} (fonts used: {}-fonts.txt); train with --dataset npz:{}/{}", args.out.display(), args.prefix, args.out.display(), args.prefix);
    Ok(())
}
