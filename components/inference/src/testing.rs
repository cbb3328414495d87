//! Test support (feature `testing`): small classifiers described as [`Layer`]s that can be written
//! as ONNX graphs (through [`crate::export`], the writer the trainer exports with) *and* run by a
//! plain ndarray reference, so tests compare tract's output with an independent computation. Also
//! writes model cards, so integration tests, examples and benches can build a models directory
//! without the trainer.

use std::path::Path;

use ndarray::{Array1, Array2, Array4, ArrayD, ArrayViewD, Axis, IxDyn, s};

use crate::card::{ChannelMode, Class, InputSpec, ModelCard, Normalization, OutputKind, OutputSpec, classes_from_csv};
use crate::export::{GraphBuilder, GraphInfo, INPUT_NAME, nnef_tgz};
use crate::model::{sha256_hex, softmax};

/// One layer of a test classifier. Shapes are NCHW; weights follow ONNX/PyTorch layouts.
#[derive(Clone, Debug)]
pub enum Layer {
    /// ONNX Conv with square kernel, symmetric zero padding.
    Conv { weight: Array4<f32>, bias: Array1<f32>, stride: usize, pad: usize },
    BatchNorm { gamma: Array1<f32>, beta: Array1<f32>, mean: Array1<f32>, var: Array1<f32>, eps: f32 },
    Relu,
    MaxPool { kernel: usize, stride: usize },
    /// Identity at inference.
    Dropout,
    /// [N, C, H, W] → [N, C, 1, 1]
    GlobalAvgPool,
    /// ONNX Flatten, axis 1.
    Flatten,
    /// ONNX Reshape to [0, -1] (another way exporters flatten).
    Reshape,
    /// ONNX Gemm with transB=1: weight [out, in].
    Gemm { weight: Array2<f32>, bias: Array1<f32> },
    /// ONNX MatMul by weight [in, out], then Add bias.
    MatMulAdd { weight: Array2<f32>, bias: Array1<f32> },
    /// y = x + body(x) (ONNX Add).
    Residual { body: Vec<Layer> },
    /// ONNX Softmax over axis 1.
    Softmax,
}

/// Deterministic pseudo-random numbers (xorshift64*), so tests need no RNG crate.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Lcg {
        Lcg(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Uniform in [-1, 1).
    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        (v as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

impl Layer {
    pub fn conv(rng: &mut Lcg, in_ch: usize, out_ch: usize, kernel: usize, stride: usize, pad: usize) -> Layer {
        let scale = (2.0 / (in_ch * kernel * kernel) as f32).sqrt();
        Layer::Conv {
            weight: Array4::from_shape_vec((out_ch, in_ch, kernel, kernel), rng.vec(out_ch * in_ch * kernel * kernel, scale)).unwrap(),
            bias: Array1::from(rng.vec(out_ch, 0.1)),
            stride,
            pad,
        }
    }
    pub fn batch_norm(rng: &mut Lcg, ch: usize) -> Layer {
        Layer::BatchNorm {
            gamma: Array1::from(rng.vec(ch, 0.5)).mapv(|v| v + 1.0),
            beta: Array1::from(rng.vec(ch, 0.2)),
            mean: Array1::from(rng.vec(ch, 0.3)),
            var: Array1::from(rng.vec(ch, 0.5)).mapv(|v| v.abs() + 0.5),
            eps: 1e-5,
        }
    }
    pub fn gemm(rng: &mut Lcg, inputs: usize, outputs: usize) -> Layer {
        let scale = (2.0 / inputs as f32).sqrt();
        Layer::Gemm {
            weight: Array2::from_shape_vec((outputs, inputs), rng.vec(outputs * inputs, scale)).unwrap(),
            bias: Array1::from(rng.vec(outputs, 0.1)),
        }
    }
    pub fn matmul_add(rng: &mut Lcg, inputs: usize, outputs: usize) -> Layer {
        let scale = (2.0 / inputs as f32).sqrt();
        Layer::MatMulAdd {
            weight: Array2::from_shape_vec((inputs, outputs), rng.vec(outputs * inputs, scale)).unwrap(),
            bias: Array1::from(rng.vec(outputs, 0.1)),
        }
    }
}

/// The reference server's CNN size (≈0.43M parameters, ≈8.5 MFLOP/image) for 28×28×1 input:
/// conv32-relu-pool, conv64-relu-pool, fc128-relu, fc`classes` (logits).
pub fn reference_cnn(seed: u64, classes: usize) -> Vec<Layer> {
    let mut rng = Lcg::new(seed);
    vec![
        Layer::conv(&mut rng, 1, 32, 3, 1, 1),
        Layer::Relu,
        Layer::MaxPool { kernel: 2, stride: 2 },
        Layer::conv(&mut rng, 32, 64, 3, 1, 1),
        Layer::Relu,
        Layer::MaxPool { kernel: 2, stride: 2 },
        Layer::Flatten,
        Layer::gemm(&mut rng, 64 * 7 * 7, 128),
        Layer::Relu,
        Layer::Dropout,
        Layer::gemm(&mut rng, 128, classes),
    ]
}

/// Number of learned parameters.
pub fn parameter_count(layers: &[Layer]) -> usize {
    layers
        .iter()
        .map(|l| match l {
            Layer::Conv { weight, bias, .. } => weight.len() + bias.len(),
            Layer::BatchNorm { gamma, beta, .. } => gamma.len() + beta.len(),
            Layer::Gemm { weight, bias } | Layer::MatMulAdd { weight, bias } => weight.len() + bias.len(),
            Layer::Residual { body } => parameter_count(body),
            _ => 0,
        })
        .sum()
}

// ---------------------------------------------------------------- ONNX (through crate::export)

/// Writes `layers` into `g` from `x`; parameters are named after the layer's path, as the
/// trainer names its tensors (`"2.weight"`, `"3.body.0.gamma"`).
fn write_layers(g: &mut GraphBuilder, path: &str, mut x: String, layers: &[Layer]) -> String {
    for (i, layer) in layers.iter().enumerate() {
        let p = format!("{path}{i}");
        let tensor = |g: &mut GraphBuilder, name: &str, a: ArrayViewD<f32>| g.tensor(format!("{p}.{name}"), a.shape(), a.iter().copied());
        x = match layer {
            Layer::Conv { weight, bias, stride, pad } => {
                let (w, b) = (tensor(g, "weight", weight.view().into_dyn()), tensor(g, "bias", bias.view().into_dyn()));
                g.conv(x, w, b, weight.shape()[2], *stride, *pad)
            }
            Layer::BatchNorm { gamma, beta, mean, var, eps } => {
                let params = [("gamma", gamma), ("beta", beta), ("running_mean", mean), ("running_var", var)]
                    .map(|(name, v)| tensor(g, name, v.view().into_dyn()));
                // ONNX's default momentum; tract ignores it.
                g.batch_norm(x, params, *eps, 0.9)
            }
            Layer::Relu => g.op("Relu", vec![x]),
            Layer::MaxPool { kernel, stride } => g.max_pool(x, *kernel, *stride),
            Layer::Dropout => g.op("Dropout", vec![x]),
            Layer::GlobalAvgPool => g.op("GlobalAveragePool", vec![x]),
            Layer::Flatten => g.flatten(x),
            Layer::Reshape => {
                let shape = g.tensor_i64(format!("{p}.shape"), &[2], &[0, -1]);
                g.op("Reshape", vec![x, shape])
            }
            Layer::Gemm { weight, bias } => {
                let (w, b) = (tensor(g, "weight", weight.view().into_dyn()), tensor(g, "bias", bias.view().into_dyn()));
                g.gemm(x, w, b)
            }
            Layer::MatMulAdd { weight, bias } => {
                let (w, b) = (tensor(g, "weight", weight.view().into_dyn()), tensor(g, "bias", bias.view().into_dyn()));
                let y = g.op("MatMul", vec![x, w]);
                g.op("Add", vec![y, b])
            }
            Layer::Residual { body } => {
                let y = write_layers(g, &format!("{p}.body."), x.clone(), body);
                g.op("Add", vec![y, x])
            }
            Layer::Softmax => g.softmax(x),
        };
    }
    x
}

/// Serialises `layers` as an ONNX model (opset 13) with input "input" [N, C, H, W].
pub fn onnx_bytes(input: [usize; 3], layers: &[Layer]) -> Vec<u8> {
    let mut g = GraphBuilder::new();
    let output = write_layers(&mut g, "", INPUT_NAME.into(), layers);
    g.finish(output, GraphInfo {
        name: "test",
        producer_name: "kana-inference testing",
        producer_version: env!("CARGO_PKG_VERSION"),
        doc: String::new(),
        input,
        output: "output",
        classes: None,
    })
}

// ---------------------------------------------------------------- ndarray reference

/// Runs `layers` on `x` ([N, C, H, W]) with plain loops: the independent reference.
pub fn forward(layers: &[Layer], x: ArrayD<f32>) -> ArrayD<f32> {
    layers.iter().fold(x, |x, l| forward_layer(l, x))
}

fn forward_layer(layer: &Layer, x: ArrayD<f32>) -> ArrayD<f32> {
    match layer {
        Layer::Conv { weight, bias, stride, pad } => {
            let x = x.into_dimensionality::<ndarray::Ix4>().unwrap();
            let (n, c, h, w) = x.dim();
            let (o, _, k, _) = weight.dim();
            let (oh, ow) = ((h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1);
            let mut padded = Array4::<f32>::zeros((n, c, h + 2 * pad, w + 2 * pad));
            padded.slice_mut(s![.., .., *pad..pad + h, *pad..pad + w]).assign(&x);
            let mut y = Array4::<f32>::zeros((n, o, oh, ow));
            for ((b, oc, i, j), v) in y.indexed_iter_mut() {
                let patch = padded.slice(s![b, .., i * stride..i * stride + k, j * stride..j * stride + k]);
                *v = bias[oc] + (&patch * &weight.slice(s![oc, .., .., ..])).sum();
            }
            y.into_dyn()
        }
        Layer::BatchNorm { gamma, beta, mean, var, eps } => {
            let mut x = x;
            for (ch, mut plane) in x.axis_iter_mut(Axis(1)).enumerate() {
                let inv = gamma[ch] / (var[ch] + eps).sqrt();
                plane.mapv_inplace(|v| (v - mean[ch]) * inv + beta[ch]);
            }
            x
        }
        Layer::Relu => x.mapv(|v| v.max(0.0)),
        Layer::MaxPool { kernel, stride } => {
            let x = x.into_dimensionality::<ndarray::Ix4>().unwrap();
            let (n, c, h, w) = x.dim();
            let (oh, ow) = ((h - kernel) / stride + 1, (w - kernel) / stride + 1);
            let mut y = Array4::<f32>::zeros((n, c, oh, ow));
            for ((b, ch, i, j), v) in y.indexed_iter_mut() {
                let window = x.slice(s![b, ch, i * stride..i * stride + kernel, j * stride..j * stride + kernel]);
                *v = window.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            }
            y.into_dyn()
        }
        Layer::Dropout => x,
        Layer::GlobalAvgPool => {
            let x = x.into_dimensionality::<ndarray::Ix4>().unwrap();
            let (n, c, _, _) = x.dim();
            let mut y = Array4::<f32>::zeros((n, c, 1, 1));
            for ((b, ch, _, _), v) in y.indexed_iter_mut() {
                *v = x.slice(s![b, ch, .., ..]).mean().unwrap();
            }
            y.into_dyn()
        }
        Layer::Flatten | Layer::Reshape => {
            let n = x.shape()[0];
            let rest = x.len() / n.max(1);
            let x = x.as_standard_layout().to_owned();
            x.into_shape_with_order(IxDyn(&[n, rest])).unwrap()
        }
        Layer::Gemm { weight, bias } => {
            let x = x.into_dimensionality::<ndarray::Ix2>().unwrap();
            (x.dot(&weight.t()) + bias).into_dyn()
        }
        Layer::MatMulAdd { weight, bias } => {
            let x = x.into_dimensionality::<ndarray::Ix2>().unwrap();
            (x.dot(weight) + bias).into_dyn()
        }
        Layer::Residual { body } => {
            let y = forward(body, x.clone());
            x + y
        }
        Layer::Softmax => {
            let mut x = x;
            for mut row in x.axis_iter_mut(Axis(0)) {
                let p = softmax(&row.iter().copied().collect::<Vec<_>>());
                row.iter_mut().zip(p).for_each(|(v, p)| *v = p);
            }
            x
        }
    }
}

// ---------------------------------------------------------------- cards and model directories

/// The 49 K49 classes from the fixture class map (label = the hiragana, codepoint "U+3042").
pub fn k49_classes() -> Vec<Class> {
    classes_from_csv(include_str!("../../../fixtures/k49/k49_classmap.csv")).expect("the fixture class map is valid")
}

/// Classes named "class0".."classN-1".
pub fn numbered_classes(n: usize) -> Vec<Class> {
    (0..n).map(|index| Class { index, label: format!("class{index}"), codepoint: None }).collect()
}

/// A card for a test model (uint8 / 255, mean 0, std 1 unless the caller edits it).
pub fn test_card(name: &str, input: [usize; 3], classes: Vec<Class>, output: OutputKind, onnx: &[u8]) -> ModelCard {
    ModelCard {
        name: name.into(),
        version: "0.0.0-test".into(),
        description: "built by kana_inference::testing (random weights, not trained)".into(),
        file: format!("{name}.onnx"),
        nnef_file: None,
        nnef_sha256: None,
        sha256: sha256_hex(onnx),
        input: InputSpec {
            shape: input,
            normalization: Normalization { scale: 1.0 / 255.0, mean: vec![0.0], std: vec![1.0] },
            channels: ChannelMode::for_channels(input[0]),
        },
        output: OutputSpec { kind: output },
        classes,
        metrics: None,
        training: None,
        aliases: Vec::new(),
        training_data: None,
        attribution: None,
    }
}

/// Writes `<name>.onnx` and `<name>.card.json` into `dir`.
pub fn write_model(dir: &Path, card: &ModelCard, onnx: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(&card.file), onnx)?;
    card.write(dir).map(drop)
}

/// The reference-size K49 CNN (random weights) written to `dir` as `name`; with `nnef` also an
/// NNEF archive that the card points to.
pub fn write_reference_cnn(dir: &Path, name: &str, seed: u64, nnef: bool) -> anyhow::Result<ModelCard> {
    let layers = reference_cnn(seed, 49);
    let onnx = onnx_bytes([1, 28, 28], &layers);
    let mut card = test_card(name, [1, 28, 28], k49_classes(), OutputKind::Logits, &onnx);
    if nnef {
        let archive = nnef_tgz(&onnx, [1, 28, 28])?;
        let file = format!("{name}.nnef.tgz");
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(&file), &archive)?;
        card.nnef_file = Some(file);
        card.nnef_sha256 = Some(sha256_hex(&archive));
    }
    write_model(dir, &card, &onnx)?;
    Ok(card)
}

/// Bytes of a file under the workspace's `fixtures/` directory.
pub fn fixture(relative: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(relative);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// A multipart/form-data body as `curl -F 'upload_file=@file;type=<part_type>'` sends it.
/// Returns (content type header, body).
pub fn multipart_body(field: &str, filename: &str, part_type: &str, data: &[u8]) -> (String, Vec<u8>) {
    let boundary = "------------------------kanaedgeboundary7MA4YWxk";
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\nContent-Type: {part_type}\r\n\r\n").as_bytes());
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}
