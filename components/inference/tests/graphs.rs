//! tract (through `Model`) against the ndarray reference in `testing`, on ONNX graphs that use the
//! ops third-party classifiers use; plus card validation at load time.

use kana_inference::card::{ChannelMode, ModelCard, Normalization, OutputKind};
use kana_inference::testing::{self, Layer, Lcg};
use kana_inference::{Images, Model, Registry, WeightsFormat};
use ndarray::{Array1, Array2, ArrayD, IxDyn};

/// Pseudo-random grayscale images in pixel units.
fn random_images(count: usize, h: usize, w: usize, seed: u64) -> Images {
    let mut rng = Lcg::new(seed);
    let pixels = (0..count * h * w).map(|_| ((rng.next() + 1.0) * 127.5).floor()).collect();
    Images { count, height: h, width: w, pixels }
}

/// What the model should see: normalized, replicated to `channels`.
fn reference_input(images: &Images, card: &ModelCard) -> ArrayD<f32> {
    let [c, h, w] = card.input.shape;
    let n = &card.input.normalization;
    let pick = |v: &Vec<f32>, ch: usize| if v.len() == 1 { v[0] } else { v[ch] };
    let mut data = Vec::new();
    for i in 0..images.count {
        for ch in 0..c {
            data.extend(images.image(i).iter().map(|p| (p * n.scale - pick(&n.mean, ch)) / pick(&n.std, ch)));
        }
    }
    ArrayD::from_shape_vec(IxDyn(&[images.count, c, h, w]), data).unwrap()
}

fn load(card: ModelCard, onnx: &[u8]) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    testing::write_model(dir.path(), &card, onnx).unwrap();
    let model = Model::load(card, dir.path()).unwrap();
    (dir, model)
}

fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "element {i}: tract {g} vs reference {w}");
    }
}

/// Builds the model, runs tract and the reference on `count` images and compares probabilities.
fn check_against_reference(input: [usize; 3], layers: Vec<Layer>, kind: OutputKind, classes: usize, edit: impl FnOnce(&mut ModelCard)) {
    let onnx = testing::onnx_bytes(input, &layers);
    let mut card = testing::test_card("m", input, testing::numbered_classes(classes), kind, &onnx);
    edit(&mut card);
    let (_dir, model) = load(card.clone(), &onnx);
    let images = random_images(5, input[1], input[2], 7);
    let got: Vec<f32> = model.probabilities(&images).unwrap().into_iter().flat_map(|(p, _)| p).collect();
    let out = testing::forward(&layers, reference_input(&images, &card));
    let want: Vec<f32> = out
        .outer_iter()
        .flat_map(|row| {
            let row: Vec<f32> = row.iter().copied().collect();
            match kind {
                OutputKind::Logits => kana_inference::model::softmax(&row),
                OutputKind::Probabilities => row,
            }
        })
        .collect();
    assert_close(&got, &want, 1e-5);
}

#[test]
fn conv_with_pads_batchnorm_maxpool_gemm_dropout_match_reference() {
    let mut rng = Lcg::new(1);
    let layers = vec![
        Layer::conv(&mut rng, 1, 4, 3, 1, 1),
        Layer::batch_norm(&mut rng, 4),
        Layer::Relu,
        Layer::MaxPool { kernel: 2, stride: 2 },
        Layer::conv(&mut rng, 4, 6, 3, 2, 0),
        Layer::Relu,
        Layer::Flatten,
        Layer::Dropout,
        Layer::gemm(&mut rng, 6 * 3 * 3, 10),
    ];
    check_against_reference([1, 16, 16], layers, OutputKind::Logits, 10, |_| {});
}

#[test]
fn residual_add_global_average_pool_reshape_matmul_softmax_match_reference() {
    let mut rng = Lcg::new(2);
    let layers = vec![
        Layer::conv(&mut rng, 1, 8, 3, 1, 1),
        Layer::Relu,
        Layer::Residual { body: vec![Layer::conv(&mut rng, 8, 8, 3, 1, 1), Layer::batch_norm(&mut rng, 8), Layer::Relu] },
        Layer::GlobalAvgPool,
        Layer::Reshape,
        Layer::matmul_add(&mut rng, 8, 5),
        Layer::Softmax,
    ];
    check_against_reference([1, 12, 12], layers, OutputKind::Probabilities, 5, |_| {});
}

#[test]
fn three_channel_model_gets_replicated_grayscale_with_per_channel_normalization() {
    let mut rng = Lcg::new(3);
    let layers = vec![
        Layer::conv(&mut rng, 3, 4, 3, 1, 1),
        Layer::Relu,
        Layer::GlobalAvgPool,
        Layer::Flatten,
        Layer::gemm(&mut rng, 4, 3),
    ];
    check_against_reference([3, 10, 10], layers, OutputKind::Logits, 3, |card| {
        assert_eq!(card.input.channels, ChannelMode::ReplicateGrayscale);
        card.input.normalization = Normalization { scale: 1.0 / 255.0, mean: vec![0.485, 0.456, 0.406], std: vec![0.229, 0.224, 0.225] };
    });
}

#[test]
fn hand_computed_linear_model() {
    // 2×2 image [1, 2, 3, 4] (scale 1) → logits [p0, p3 + 1] = [1, 5].
    let layers = vec![
        Layer::Flatten,
        Layer::Gemm { weight: Array2::from_shape_vec((2, 4), vec![1., 0., 0., 0., 0., 0., 0., 1.]).unwrap(), bias: Array1::from(vec![0., 1.]) },
    ];
    let onnx = testing::onnx_bytes([1, 2, 2], &layers);
    let mut card = testing::test_card("lin", [1, 2, 2], testing::numbered_classes(2), OutputKind::Logits, &onnx);
    card.input.normalization.scale = 1.0;
    let (_dir, model) = load(card, &onnx);
    let images = Images { count: 1, height: 2, width: 2, pixels: vec![1., 2., 3., 4.] };
    let predictions = model.predict(&images, 2).unwrap();
    let e4 = 4f32.exp();
    assert_eq!(predictions[0].class, 1);
    assert!((predictions[0].probability - e4 / (1.0 + e4)).abs() < 1e-6);
    assert_eq!(predictions[0].top[1].0, 0);
    assert!((predictions[0].top[1].1 - 1.0 / (1.0 + e4)).abs() < 1e-6);
}

#[test]
fn one_plan_serves_any_batch_size_and_chunking_does_not_change_results() {
    let dir = tempfile::tempdir().unwrap();
    let card = testing::write_reference_cnn(dir.path(), "cnn", 5, false).unwrap();
    let mut model = Model::load(card, dir.path()).unwrap();
    let images = random_images(37, 28, 28, 11);
    model.chunk_size = 37;
    let whole = model.probabilities(&images).unwrap();
    for chunk in [1, 16] {
        model.chunk_size = chunk;
        let split = model.probabilities(&images).unwrap();
        for (a, b) in whole.iter().zip(&split) {
            assert_close(&a.0, &b.0, 1e-6);
        }
    }
    let single = model.probabilities(&images.slice(3, 4)).unwrap();
    assert_close(&single[0].0, &whole[3].0, 1e-6);
}

#[test]
fn reference_cnn_has_the_reference_size_and_nnef_gives_the_same_outputs() {
    let layers = testing::reference_cnn(9, 49);
    let params = testing::parameter_count(&layers);
    assert!((400_000..460_000).contains(&params), "{params} parameters");

    let onnx_dir = tempfile::tempdir().unwrap();
    let nnef_dir = tempfile::tempdir().unwrap();
    let onnx_card = testing::write_reference_cnn(onnx_dir.path(), "cnn", 9, false).unwrap();
    let nnef_card = testing::write_reference_cnn(nnef_dir.path(), "cnn", 9, true).unwrap();
    let onnx = Model::load(onnx_card, onnx_dir.path()).unwrap();
    let nnef = Model::load_as(nnef_card.clone(), nnef_dir.path(), WeightsFormat::Nnef).unwrap();
    // Served from ONNX even when the card names an NNEF archive (ONNX loads faster).
    assert_eq!(Model::load(nnef_card, nnef_dir.path()).unwrap().format, WeightsFormat::Onnx);
    assert_eq!((onnx.format, nnef.format), (WeightsFormat::Onnx, WeightsFormat::Nnef));
    let images = random_images(4, 28, 28, 3);
    let (a, b) = (onnx.probabilities(&images).unwrap(), nnef.probabilities(&images).unwrap());
    for (a, b) in a.iter().zip(&b) {
        assert_close(&a.0, &b.0, 1e-6);
    }
}

#[test]
fn registry_serves_valid_cards_and_reports_each_invalid_one_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let good = testing::write_reference_cnn(path, "good", 1, false).unwrap();
    let onnx = std::fs::read(path.join(&good.file)).unwrap();
    let write_card = |name: &str, edit: &dyn Fn(&mut ModelCard)| {
        let mut card = good.clone();
        card.name = name.into();
        edit(&mut card);
        std::fs::write(path.join(format!("{name}.card.json")), serde_json::to_vec(&card).unwrap()).unwrap();
    };
    write_card("bad-sha", &|c| c.sha256 = "0".repeat(64));
    write_card("bad-classes", &|c| { c.classes.pop(); });
    write_card("bad-norm", &|c| c.input.normalization.mean = vec![0.0, 0.0]);
    write_card("bad-channels", &|c| c.input.channels = ChannelMode::ReplicateGrayscale);
    write_card("bad-shape", &|c| c.input.shape = [1, 32, 32]);
    write_card("missing-file", &|c| c.file = "nope.onnx".into());
    write_card("bad-std", &|c| c.input.normalization.std = vec![0.0]);
    write_card("bad name", &|_| {});
    std::fs::write(path.join("broken.card.json"), b"{ not json").unwrap();
    std::fs::write(path.join("notes.json"), b"{}").unwrap(); // not a card: ignored
    let _ = onnx;

    let (registry, errors) = Registry::load_dir(path);
    assert_eq!(registry.cards().map(|c| c.name.as_str()).collect::<Vec<_>>(), vec!["good"]);
    let mut failed: Vec<String> = errors.iter().map(|e| e.path.file_name().unwrap().to_string_lossy().into_owned()).collect();
    failed.sort();
    assert_eq!(failed, vec![
        "bad name.card.json", "bad-channels.card.json", "bad-classes.card.json", "bad-norm.card.json",
        "bad-sha.card.json", "bad-shape.card.json", "bad-std.card.json", "broken.card.json", "missing-file.card.json",
    ]);
    let message = |file: &str| errors.iter().find(|e| e.path.ends_with(file)).unwrap().message.clone();
    assert!(message("bad-sha.card.json").contains("sha256"), "{}", message("bad-sha.card.json"));
    assert!(message("bad-classes.card.json").contains("48 classes"), "{}", message("bad-classes.card.json"));
    assert!(message("missing-file.card.json").contains("cannot read"));
    assert!(Registry::load_dir(&path.join("absent")).1.len() == 1);
}

#[test]
fn an_opened_registry_plans_each_model_on_first_use_and_reports_bad_weights_then() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let good = testing::write_reference_cnn(path, "good", 1, false).unwrap();
    let mut bad = good.clone();
    bad.name = "bad-sha".into();
    bad.sha256 = "0".repeat(64);
    std::fs::write(path.join("bad-sha.card.json"), serde_json::to_vec(&bad).unwrap()).unwrap();
    let mut missing = good.clone();
    missing.name = "missing-file".into();
    missing.file = "nope.onnx".into();
    std::fs::write(path.join("missing-file.card.json"), serde_json::to_vec(&missing).unwrap()).unwrap();

    let (registry, errors) = Registry::open_dir(path);
    // A card naming an absent file is still refused up front.
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].path.ends_with("missing-file.card.json") && errors[0].message.contains("cannot read"));
    let names: Vec<&str> = registry.cards().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["bad-sha", "good"]);
    let (good, bad) = (registry.get("good").unwrap(), registry.get("bad-sha").unwrap());
    assert_eq!((good.load_ms(), bad.load_ms()), (None, None), "nothing planned before a request");

    let images = random_images(3, 28, 28, 9);
    let eager = Model::load(good.card.clone(), path).unwrap();
    let (lazy_rows, eager_rows) = (good.probabilities(&images).unwrap(), eager.probabilities(&images).unwrap());
    for (a, b) in lazy_rows.iter().zip(&eager_rows) {
        assert_eq!(a.0, b.0, "one plan, whichever way it was built");
    }
    assert!(good.load_ms().is_some() && good.load_error().is_none());

    let error = bad.probabilities(&images).unwrap_err();
    assert_eq!(error.status(), 500);
    let message = error.to_string();
    assert!(message.contains("model 'bad-sha' cannot be loaded") && message.contains("sha256"), "{message}");
    assert!(bad.load_error().is_some_and(|e| e.contains("sha256")) && bad.load_ms().is_none());
}

#[test]
fn aliases_resolve_to_their_model_and_clashes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let write = |name: &str, aliases: &[&str]| {
        let mut card = testing::write_reference_cnn(path, name, 1, false).unwrap();
        card.aliases = aliases.iter().map(|a| a.to_string()).collect();
        testing::write_model(path, &card, &std::fs::read(path.join(&card.file)).unwrap()).unwrap();
    };
    write("hiragana-edge", &["cnn"]);
    write("hiragana-resnet", &["densenet"]);
    // A later card may not take a name or alias that is already served.
    write("zz-clash", &["densenet"]);
    write("zz-self", &["zz-self"]);
    write("zz-bad-alias", &["no/slash"]);

    let (registry, errors) = Registry::load_dir(path);
    assert_eq!(registry.get("cnn").unwrap().card.name, "hiragana-edge");
    assert_eq!(registry.get("densenet").unwrap().card.name, "hiragana-resnet");
    assert_eq!(registry.get("hiragana-edge").unwrap().card.name, "hiragana-edge");
    assert!(registry.get("resnet").is_none(), "unknown names stay unknown");
    assert_eq!(registry.len(), 2);
    let message = |file: &str| errors.iter().find(|e| e.path.ends_with(file)).map(|e| e.message.clone()).unwrap_or_default();
    assert!(message("zz-clash.card.json").contains("already taken by model 'hiragana-resnet'"), "{errors:?}");
    assert!(message("zz-self.card.json").contains("listed twice"), "{errors:?}");
    assert!(message("zz-bad-alias.card.json").contains("no/slash"), "{errors:?}");
}
