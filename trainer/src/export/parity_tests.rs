//! Parity: the exported ONNX (and NNEF) run by tract must give the trainer's own eval-mode CPU
//! outputs within 1e-4 on 64 images, for every zoo model, with seeded random weights whose
//! biases and batch-norm statistics are far from their identity initialisation.

use std::sync::Arc;

use kana_inference::model::{nnef_graph, onnx_graph};
use ndarray::{Array2, Array4, ArrayD, ArrayView4, Ix2};
use rand::prelude::*;
use rand::rngs::StdRng;
use tract_onnx::prelude::*;

use super::*;
use crate::model::{self, ZOO, cpu};

const TOLERANCE: f32 = 1e-4;

/// A typed graph from `kana_inference`'s loaders as an optimised, runnable plan.
fn runnable(graph: TractResult<TypedModel>) -> Arc<TypedRunnableModel> {
    graph.and_then(TypedModel::into_optimized).and_then(TypedModel::into_runnable).unwrap()
}

/// Runs a plan on normalised input [N, C, H, W] → [N, classes].
fn run_plan(plan: &Arc<TypedRunnableModel>, x: ArrayView4<f32>) -> Array2<f32> {
    let out = plan.run(tvec!(Tensor::from(x.to_owned()).into_tvalue())).unwrap();
    out[0].to_plain_array_view::<f32>().unwrap().to_owned().into_dimensionality::<Ix2>().unwrap()
}

/// Init weights, then make every bias / BN tensor non-trivial so the export of each is exercised.
fn random_weights(arch: &Architecture, seed: u64) -> Weights {
    let mut w = model::init_weights(arch, seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37);
    for (name, t) in w.iter_mut() {
        let range: Option<(f32, f32)> = match name.rsplit('.').next().unwrap() {
            "bias" | "beta" | "running_mean" => Some((-0.5, 0.5)),
            "gamma" => Some((0.5, 1.5)),
            "running_var" => Some((0.2, 2.0)),
            _ => None,
        };
        if let Some((lo, hi)) = range {
            *t = ArrayD::from_shape_fn(t.raw_dim(), |_| rng.random_range(lo..hi));
        }
    }
    w
}

fn images(n: usize, input: [usize; 3], seed: u64) -> Array4<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    Array4::from_shape_fn((n, input[0], input[1], input[2]), |_| rng.random_range(-1.0..1.0))
}

fn max_abs_diff(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn onnx_and_nnef_match_the_cpu_reference_for_every_zoo_model() {
    for (i, name) in ZOO.iter().enumerate() {
        let arch = model::zoo(name, [1, 28, 28], 49).unwrap();
        let w = random_weights(&arch, 11 + i as u64);
        let x = images(64, arch.input, 5);
        let want = cpu::forward_eval(&arch, &w, x.view());
        assert!(want.iter().all(|v| v.is_finite()));
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.1, "{name}: logits too small ({scale}) for a meaningful comparison");

        let onnx = onnx::to_onnx_bytes(&arch, &w).unwrap();
        let got = run_plan(&runnable(onnx_graph(&onnx, arch.input)), x.view());
        let d = max_abs_diff(&want, &got);
        assert!(d <= TOLERANCE, "{name}: ONNX differs from the CPU reference by {d}");

        let nnef = kana_inference::export::nnef_tgz(&onnx, arch.input).unwrap();
        let got = run_plan(&runnable(nnef_graph(&nnef)), x.view());
        let d = max_abs_diff(&want, &got);
        assert!(d <= TOLERANCE, "{name}: NNEF differs from the CPU reference by {d}");
    }
}

#[test]
fn the_batch_dimension_is_symbolic() {
    let arch = model::zoo("cnn", [1, 28, 28], 10).unwrap();
    let w = random_weights(&arch, 3);
    let plan = runnable(onnx_graph(&onnx::to_onnx_bytes(&arch, &w).unwrap(), arch.input));
    for n in [1, 3] {
        let x = images(n, arch.input, n as u64);
        let d = max_abs_diff(&cpu::forward_eval(&arch, &w, x.view()), &run_plan(&plan, x.view()));
        assert!(d <= TOLERANCE, "batch {n}: {d}");
    }
}

#[test]
fn a_wrong_checkpoint_is_refused() {
    let arch = model::zoo("cnn", [1, 28, 28], 10).unwrap();
    let mut w = random_weights(&arch, 3);
    w.remove("0.bias");
    let err = onnx::to_onnx_bytes(&arch, &w).unwrap_err();
    assert!(err.to_string().contains("0.bias"), "{err}");
    let mut w = random_weights(&arch, 3);
    w.insert("0.bias".into(), ArrayD::zeros(vec![3]));
    assert!(onnx::to_onnx_bytes(&arch, &w).unwrap_err().to_string().contains("shape"));
}

#[test]
fn export_writes_a_card_the_server_accepts() {
    let arch = model::zoo("cnn", [1, 28, 28], 10).unwrap();
    let w = random_weights(&arch, 4);
    let dir = std::env::temp_dir().join(format!("kana-export-{}", std::process::id()));
    let info = CardInfo {
        name: "toy-cnn".into(),
        version: "1".into(),
        description: "parity test".into(),
        classes: crate::data::classes::fashion_mnist(),
        normalization: crate::data::model_normalization(),
        training: None,
        aliases: vec!["cnn".into()],
        training_data: Some("parity test data".into()),
        attribution: None,
    };
    let out = export(&arch, &w, info, &dir).unwrap();
    assert_eq!(read_card(&out.card_path).unwrap(), out.card);
    let (registry, errors) = kana_inference::Registry::load_dir(&dir);
    assert!(errors.is_empty(), "{errors:?}");
    let served = registry.get("toy-cnn").unwrap();
    assert_eq!(registry.get("cnn").unwrap().card.name, "toy-cnn", "the alias answers too");

    // The server's own preprocessing of uint8 pixels gives the reference's probabilities.
    let pixels: Vec<u8> = (0..2 * 28 * 28).map(|i| (i * 37 % 256) as u8).collect();
    let norm = crate::data::model_normalization();
    let x = Array4::from_shape_fn((2, 1, 28, 28), |(b, _, y, xx)| {
        (pixels[b * 784 + y * 28 + xx] as f32 * norm.scale - norm.mean[0]) / norm.std[0]
    });
    let want = cpu::forward_eval(&arch, &w, x.view());
    let got = served.probabilities(&kana_inference::Images::from_u8(2, 28, 28, &pixels)).unwrap();
    for (row, (probs, _)) in want.outer_iter().zip(&got) {
        let want_p = kana_inference::model::softmax(row.as_slice().unwrap());
        let d = want_p.iter().zip(probs).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(d < 1e-5, "served probabilities differ by {d}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
