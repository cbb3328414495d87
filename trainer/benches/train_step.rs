//! Training-step throughput (images/s) of the zoo models on every backend this machine has:
//! the CPU reference and each wgpu adapter, labelled "<backend>/<adapter>".
//! Run: `cargo bench -p kana-trainer --bench train_step` (KANA_BENCH_MODELS=cnn,resnet to pick).
//! Software rasterisers (lavapipe: ~100 s per step) are skipped unless KANA_BENCH_SOFTWARE=1.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kana_trainer::kernels::Kernels;
use kana_trainer::kernels::augment::AugmentParams;
use kana_trainer::model::gpu::{GpuModel, GpuTrainConfig};
use kana_trainer::model::{init_weights, zoo};
use kana_trainer::optim::{OptimConfig, OptimizerKind};
use kana_trainer::train::{CpuEngine, Engine};
use ndarray::Array3;

const BATCH: usize = 128;

fn bench(c: &mut Criterion) {
    kana_trainer::model::cpu::keep_freed_memory();
    let models = std::env::var("KANA_BENCH_MODELS").unwrap_or_else(|_| "cnn,resnet".into());
    let optim = OptimConfig { kind: OptimizerKind::Adamw, lr: 1e-3, weight_decay: 5e-4, momentum: 0.9 };
    let augment = AugmentParams { rotate_deg: 8.0, scale: 0.08, shift_px: 2.0, flip: false, erase_px: 0.0, mean: 0.5, std: 0.5 };
    let raw = Array3::from_shape_fn((BATCH, 28, 28), |(i, y, x)| ((i * 7 + y * 3 + x) % 256) as f32 / 255.0);
    let labels: Vec<u32> = (0..BATCH as u32).map(|i| i % 10).collect();
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_secs(2));
    group.measurement_time(std::time::Duration::from_secs(8));
    group.throughput(Throughput::Elements(BATCH as u64));
    let software = std::env::var("KANA_BENCH_SOFTWARE").is_ok_and(|v| v == "1");
    let adapters: Vec<_> = kana_trainer::gpu::list_adapters(wgpu::Backends::all())
        .into_iter()
        .filter(|a| software || a.device_type != wgpu::DeviceType::Cpu)
        .collect();
    for name in models.split(',') {
        let arch = zoo(name, [1, 28, 28], 10).expect("zoo model");
        let weights = init_weights(&arch, 0);
        let mut cpu = CpuEngine::new(&arch, weights.clone(), optim, augment, 0.1);
        group.bench_function(BenchmarkId::new(format!("cpu/{} threads", rayon::current_num_threads()), name), |b| {
            b.iter(|| cpu.step(raw.view(), &labels, 1e-3, 0, 1))
        });
        for info in &adapters {
            let Ok(gpu) = kana_trainer::gpu::open(info.backend.into(), Some(&info.name)) else { continue };
            let kernels = Kernels::new(&gpu);
            let cfg = GpuTrainConfig { batch: BATCH, optim, smoothing: 0.1, augment };
            let mut model = GpuModel::new(gpu, &kernels, &arch, &weights, cfg).expect("gpu model");
            let label = format!("{:?}/{}", info.backend, info.name).to_lowercase();
            // Each iteration queues a step and waits for it (reading the 2 metric floats).
            group.bench_function(BenchmarkId::new(label, name), |b| {
                b.iter(|| {
                    model.train_step(raw.view(), &labels, 1e-3, 0, 1);
                    model.take_metrics()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
