//! Native tract vs the same model inside the `predict` component (in-process wasmtime through the
//! host's own `ComponentPool`, so instance reuse and the model cache are the production ones).
//! Model: the reference-size K49 CNN (≈0.43M parameters, random weights), inputs the K49 fixtures.
//!
//! `cargo xtask build-components` (or `cargo build -p predict --release --target wasm32-wasip2`)
//! first; then `cargo bench -p kana-benches`. Numbers are recorded in benches/README.md.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use kana_host::engine::{load_component, new_engine, new_linker};
use kana_host::http::pool::{ComponentPool, PoolConfig};
use kana_host::limits::MemoryPolicy;
use kana_host::key_value::{KeyValueAccess, MemoryBackend};
use kana_host::manifest::DirMount;
use kana_host::state::ComponentEnv;
use kana_inference::testing::{self, fixture};
use kana_inference::{Limits, Model, WeightsFormat, decode_upload};
use wasmtime_wasi_http::handler::ProxyPre;
use wasmtime_wasi_http::p3::bindings::ServicePre;

fn predict_wasm() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release/predict.wasm")
}

fn wasm_pool(models: &Path, cache: &Path, chunk: usize) -> anyhow::Result<ComponentPool> {
    let engine = new_engine()?;
    let linker = new_linker(&engine)?;
    let (component, _) = load_component(&engine, &predict_wasm(), cache)?;
    let pre = ServicePre::new(linker.instantiate_pre(&component)?)?;
    let known = Arc::new(BTreeSet::from(["default".to_string()]));
    let env = ComponentEnv {
        id: "predict".into(),
        mounts: vec![DirMount { host: models.to_path_buf(), guest: "/models".into() }],
        environment: vec![],
        key_value: KeyValueAccess::new(Arc::new(MemoryBackend::default()), BTreeSet::new(), known),
        variables: Arc::new([("chunk_size".to_string(), chunk.to_string())].into_iter().collect()),
        memory: MemoryPolicy::default(),
    };
    let config = PoolConfig { instances: 1, max_requests_per_instance: usize::MAX, ..PoolConfig::default() };
    Ok(ComponentPool::new(engine, ProxyPre::P3(pre), env, config))
}

async fn post(pool: &ComponentPool, path: &str, body: &Bytes) -> Bytes {
    let body = Full::new(body.clone()).map_err(|never| match never {}).boxed_unsync();
    let request = http::Request::post(format!("http://localhost{path}")).header("content-type", "application/x-npz").body(body).unwrap();
    let _slot = pool.admit().await.expect("one client");
    let response = pool.handle(request, Default::default()).await.expect("component answered");
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.expect("body").to_bytes()
}

/// Model load (read, optimise, plan): ONNX vs the NNEF archive of the same graph, natively.
fn bench_load(c: &mut Criterion) {
    let onnx_dir = tempfile::tempdir().unwrap();
    let nnef_dir = tempfile::tempdir().unwrap();
    let onnx_card = testing::write_reference_cnn(onnx_dir.path(), "cnn", 42, false).unwrap();
    let nnef_card = testing::write_reference_cnn(nnef_dir.path(), "cnn", 42, true).unwrap();
    let mut group = c.benchmark_group("load");
    group.bench_function("onnx", |b| b.iter(|| Model::load(onnx_card.clone(), onnx_dir.path()).unwrap()));
    group.bench_function("nnef", |b| {
        b.iter(|| Model::load_as(nnef_card.clone(), nnef_dir.path(), WeightsFormat::Nnef).unwrap())
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    let models = tempfile::tempdir().unwrap();
    let card = testing::write_reference_cnn(models.path(), "cnn", 42, false).unwrap();
    let mut model = Model::load(card, models.path()).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let built = predict_wasm().is_file();
    if !built {
        eprintln!("{} not built: only the native half runs", predict_wasm().display());
    }
    let pools: Vec<(usize, ComponentPool)> = if built {
        [1, 4, 8, 16, 32, 100].into_iter().map(|chunk| (chunk, runtime.block_on(async { wasm_pool(models.path(), cache.path(), chunk) }).unwrap())).collect()
    } else {
        vec![]
    };

    for (file, n) in [("k49/test_image_0.npz", 1), ("k49/test_images_100.npz", 100)] {
        let bytes = Bytes::from(fixture(file));
        let images = decode_upload(Some("application/x-npz"), &bytes, 28, 28, &Limits::default()).unwrap();
        let mut group = c.benchmark_group(format!("batch_{n}"));
        group.throughput(Throughput::Elements(n as u64));
        for chunk in [1, 4, 8, 16, 32, 100] {
            if n == 1 && chunk > 1 {
                continue;
            }
            model.chunk_size = chunk;
            group.bench_with_input(BenchmarkId::new("native_tract", format!("chunk{chunk}")), &images, |b, images| {
                b.iter(|| model.predict(images, 1).unwrap())
            });
        }
        for (chunk, pool) in &pools {
            if n == 1 && *chunk > 1 {
                continue;
            }
            runtime.block_on(post(pool, "/predict/cnn", &bytes)); // load the model once
            group.bench_function(BenchmarkId::new("wasm_component", format!("chunk{chunk}")), |b| {
                b.iter(|| runtime.block_on(post(pool, "/predict/cnn", &bytes)))
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(4));
    targets = bench, bench_load
}
criterion_main!(benches);
