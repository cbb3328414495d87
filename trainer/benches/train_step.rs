//! The backend table: training-step throughput (images/s, batch 128) of the zoo models on every
//! backend this machine has — the CPU reference and each wgpu adapter by backend and name (an
//! NVIDIA GPU shows as `vulkan` + its name). Prints one Markdown table to paste into README.md.
//!
//! Run: `cargo bench -p kana-trainer --bench train_step`. Environment:
//! - `KANA_BENCH_MODELS=cnn,resnet` (default) picks the models;
//! - `KANA_BENCH_SOFTWARE=1` includes software rasterisers (lavapipe: seconds per step);
//! - `KANA_BENCH_SECONDS=8` (default) is the measuring time per row, after one warm-up step
//!   (at least 3 steps are timed);
//! - `KANA_BENCH_PROFILE=1` also prints each wgpu step's per-kernel profile
//!   (`kernels::profile`: GPU timestamps where the adapter has them, else host clock);
//!   `KANA_BENCH_PROFILE=2` lists every dispatch too.

use std::time::{Duration, Instant};

use kana_trainer::kernels::augment::AugmentParams;
use kana_trainer::kernels::{Kernels, profile};
use kana_trainer::model::gpu::{GpuModel, GpuTrainConfig};
use kana_trainer::model::{init_weights, zoo};
use kana_trainer::optim::{OptimConfig, OptimizerKind};
use kana_trainer::train::{CpuEngine, Engine};
use ndarray::Array3;

const BATCH: usize = 128;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// CPU time (user + system) this process has used, in seconds. Software adapters (lavapipe) and
/// the CPU backend run on this process's threads, so CPU time per step shows what a step costs
/// when other work shares the cores and wall time does not.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut u = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Not measured where the trainer does not depend on libc (shown as NaN).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn process_cpu_seconds() -> f64 {
    f64::NAN
}

/// Wall-clock step times (seconds): one warm-up step, then steps until `budget` has passed (at
/// least 3); and the mean process CPU seconds per timed step.
fn time_steps(budget: Duration, mut step: impl FnMut()) -> (Vec<f64>, f64) {
    step();
    let (start, cpu) = (Instant::now(), process_cpu_seconds());
    let mut times = Vec::new();
    while times.len() < 3 || start.elapsed() < budget {
        let t = Instant::now();
        step();
        times.push(t.elapsed().as_secs_f64());
    }
    let cpu_per_step = (process_cpu_seconds() - cpu) / times.len() as f64;
    (times, cpu_per_step)
}

/// "median ms | median images/s (slowest–fastest) | CPU s / step | steps".
fn row((mut times, cpu): (Vec<f64>, f64)) -> String {
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let ips = |t: f64| BATCH as f64 / t;
    format!("{:.1} | **{:.1}** ({:.1}–{:.1}) | {cpu:.2} | {}", median * 1e3, ips(median), ips(times[times.len() - 1]), ips(times[0]), times.len())
}

fn cpu_name() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let name = info.lines().find_map(|l| l.strip_prefix("model name")).and_then(|l| l.split(':').nth(1)).unwrap_or("cpu").trim().to_string();
    format!("{name}, {} threads", rayon::current_num_threads())
}

fn main() {
    // `cargo bench` passes `--bench`; this harness takes no arguments of its own.
    kana_trainer::model::cpu::keep_freed_memory();
    let models = env("KANA_BENCH_MODELS").unwrap_or_else(|| "cnn,resnet".into());
    let software = env("KANA_BENCH_SOFTWARE").is_some_and(|v| v == "1");
    let profiles = env("KANA_BENCH_PROFILE").and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
    let budget = Duration::from_secs_f64(env("KANA_BENCH_SECONDS").and_then(|v| v.parse().ok()).unwrap_or(8.0));
    let optim = OptimConfig { kind: OptimizerKind::Adamw, lr: 1e-3, weight_decay: 5e-4, momentum: 0.9 };
    let augment = AugmentParams { rotate_deg: 8.0, scale: 0.08, shift_px: 2.0, flip: false, erase_px: 0.0, mean: 0.5, std: 0.5 };
    let raw = Array3::from_shape_fn((BATCH, 28, 28), |(i, y, x)| ((i * 7 + y * 3 + x) % 256) as f32 / 255.0);
    let labels: Vec<u32> = (0..BATCH as u32).map(|i| i % 10).collect();
    let (adapters, skipped): (Vec<_>, Vec<_>) = kana_trainer::gpu::list_adapters(wgpu::Backends::all())
        .into_iter()
        .partition(|a| software || a.device_type != wgpu::DeviceType::Cpu);

    let mut table = vec![
        format!(
            "train_step, batch {BATCH}, {} UTC, CPU: {}, load average {}",
            chrono::Utc::now().format("%Y-%m-%d %H:%M"),
            cpu_name(),
            std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
        ),
        String::new(),
        "| model | backend | adapter | ms / step (median) | images/s: median (slowest–fastest) | CPU s / step (this process) | steps |".into(),
        "|---|---|---|---|---|---|---|".into(),
    ];
    let mut notes = Vec::new();
    for name in models.split(',') {
        let arch = zoo(name, [1, 28, 28], 10).expect("zoo model");
        let weights = init_weights(&arch, 0);
        let mut cpu = CpuEngine::new(&arch, weights.clone(), optim, augment, 0.1);
        let times = time_steps(budget, || cpu.step(raw.view(), &labels, 1e-3, 0, 1));
        table.push(format!("| {name} | cpu (reference) | ndarray + rayon, {} threads | {} |", rayon::current_num_threads(), row(times)));
        eprintln!("{}", table.last().unwrap());
        for info in &adapters {
            let gpu = match kana_trainer::gpu::open(info.backend.into(), Some(&info.name)) {
                Ok(gpu) => gpu,
                Err(e) => {
                    notes.push(format!("{:?}/{}: not opened: {e:#}", info.backend, info.name));
                    continue;
                }
            };
            let kernels = Kernels::new(&gpu);
            let cfg = GpuTrainConfig { batch: BATCH, optim, smoothing: 0.1, augment };
            let built = Instant::now();
            let mut model = GpuModel::new(gpu, &kernels, &arch, &weights, cfg).expect("gpu model");
            notes.push(format!("{name} on {:?}/{}: pipelines and buffers built in {:.1} s", info.backend, info.name, built.elapsed().as_secs_f64()));
            // Each timed step queues the step and waits for it (reading the 2 metric floats).
            let times = time_steps(budget, || {
                model.train_step(raw.view(), &labels, 1e-3, 0, 1);
                model.take_metrics();
            });
            let backend = format!("{:?}", info.backend).to_lowercase();
            table.push(format!("| {name} | {backend} | {} ({:?}) | {} |", info.name, info.device_type, row(times)));
            eprintln!("{}", table.last().unwrap());
            if profiles > 0 {
                let (clock, dispatches) = model.profile_step(raw.view(), &labels, 1e-3, 0, 1);
                let (count, uploaded) = model.step_traffic();
                println!("\nprofile: {name} on {backend}/{} ({clock:?}); {count} dispatches, {uploaded} bytes uploaded per step\n", info.name);
                println!("{}", profile::table(&dispatches));
                if profiles > 1 {
                    for d in &dispatches {
                        println!("{:>10.2} ms  {:<24} {:?}", d.seconds * 1e3, d.label, d.workgroups);
                    }
                }
            }
        }
    }
    for info in &skipped {
        notes.push(format!("{:?}/{} ({:?}) skipped: a software rasteriser (KANA_BENCH_SOFTWARE=1 includes it)", info.backend, info.name, info.device_type));
    }
    println!("\n{}", table.join("\n"));
    for n in notes {
        println!("\n{n}");
    }
}
