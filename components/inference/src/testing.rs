//! Test support (feature `testing`): small classifiers described as [`Layer`]s that can be written
//! as ONNX graphs (with `tract_onnx::pb` + prost) *and* run by a plain ndarray reference, so tests
//! compare tract's output with an independent computation. Also writes model cards, so
//! integration tests, examples and benches can build a models directory without the trainer.

use std::path::Path;

use ndarray::{Array1, Array2, Array4, ArrayD, Axis, IxDyn, s};
use prost::Message;
use tract_onnx::pb;

use crate::card::{ChannelMode, Class, InputSpec, ModelCard, Normalization, OutputKind, OutputSpec};
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

// ---------------------------------------------------------------- ONNX writer

struct GraphBuilder {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    next: usize,
}

fn attr_ints(name: &str, ints: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

fn attr_int(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: pb::attribute_proto::AttributeType::Int as i32, i, ..Default::default() }
}

fn attr_float(name: &str, f: f32) -> pb::AttributeProto {
    pb::AttributeProto { name: name.into(), r#type: pb::attribute_proto::AttributeType::Float as i32, f, ..Default::default() }
}

impl GraphBuilder {
    fn name(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}_{}", self.next)
    }

    fn init(&mut self, prefix: &str, dims: &[usize], data: impl IntoIterator<Item = f32>) -> String {
        let name = self.name(prefix);
        self.initializers.push(pb::TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: pb::tensor_proto::DataType::Float as i32,
            float_data: data.into_iter().collect(),
            ..Default::default()
        });
        name
    }

    fn node(&mut self, op: &str, inputs: Vec<String>, attribute: Vec<pb::AttributeProto>) -> String {
        let output = self.name(op);
        self.nodes.push(pb::NodeProto {
            input: inputs,
            output: vec![output.clone()],
            name: output.clone(),
            op_type: op.into(),
            attribute,
            ..Default::default()
        });
        output
    }

    fn layer(&mut self, x: String, layer: &Layer) -> String {
        match layer {
            Layer::Conv { weight, bias, stride, pad } => {
                let k = weight.shape()[2];
                let w = self.init("conv_w", weight.shape(), weight.iter().copied());
                let b = self.init("conv_b", bias.shape(), bias.iter().copied());
                let (p, s) = (*pad as i64, *stride as i64);
                self.node(
                    "Conv",
                    vec![x, w, b],
                    vec![attr_ints("kernel_shape", &[k as i64, k as i64]), attr_ints("pads", &[p, p, p, p]), attr_ints("strides", &[s, s])],
                )
            }
            Layer::BatchNorm { gamma, beta, mean, var, eps } => {
                let ch = [gamma.len()];
                let inputs = vec![
                    x,
                    self.init("bn_gamma", &ch, gamma.iter().copied()),
                    self.init("bn_beta", &ch, beta.iter().copied()),
                    self.init("bn_mean", &ch, mean.iter().copied()),
                    self.init("bn_var", &ch, var.iter().copied()),
                ];
                self.node("BatchNormalization", inputs, vec![attr_float("epsilon", *eps)])
            }
            Layer::Relu => self.node("Relu", vec![x], vec![]),
            Layer::MaxPool { kernel, stride } => self.node(
                "MaxPool",
                vec![x],
                vec![attr_ints("kernel_shape", &[*kernel as i64; 2]), attr_ints("strides", &[*stride as i64; 2])],
            ),
            Layer::Dropout => self.node("Dropout", vec![x], vec![]),
            Layer::GlobalAvgPool => self.node("GlobalAveragePool", vec![x], vec![]),
            Layer::Flatten => self.node("Flatten", vec![x], vec![attr_int("axis", 1)]),
            Layer::Reshape => {
                let shape = self.name("reshape_shape");
                self.initializers.push(pb::TensorProto {
                    name: shape.clone(),
                    dims: vec![2],
                    data_type: pb::tensor_proto::DataType::Int64 as i32,
                    int64_data: vec![0, -1],
                    ..Default::default()
                });
                self.node("Reshape", vec![x, shape], vec![])
            }
            Layer::Gemm { weight, bias } => {
                let w = self.init("fc_w", weight.shape(), weight.iter().copied());
                let b = self.init("fc_b", bias.shape(), bias.iter().copied());
                self.node("Gemm", vec![x, w, b], vec![attr_int("transB", 1)])
            }
            Layer::MatMulAdd { weight, bias } => {
                let w = self.init("mm_w", weight.shape(), weight.iter().copied());
                let b = self.init("mm_b", bias.shape(), bias.iter().copied());
                let y = self.node("MatMul", vec![x, w], vec![]);
                self.node("Add", vec![y, b], vec![])
            }
            Layer::Residual { body } => {
                let mut y = x.clone();
                for l in body {
                    y = self.layer(y, l);
                }
                self.node("Add", vec![x, y], vec![])
            }
            Layer::Softmax => self.node("Softmax", vec![x], vec![attr_int("axis", 1)]),
        }
    }
}

fn value_info(name: &str, dims: &[Option<usize>]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(n) => Value::DimValue(*n as i64),
                None => Value::DimParam("batch".into()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Serialises `layers` as an ONNX model (opset 13) with input "input" [batch, C, H, W].
pub fn onnx_bytes(input: [usize; 3], layers: &[Layer]) -> Vec<u8> {
    let mut g = GraphBuilder { nodes: vec![], initializers: vec![], next: 0 };
    let mut x = "input".to_string();
    for layer in layers {
        x = g.layer(x, layer);
    }
    let [c, h, w] = input;
    let graph = pb::GraphProto {
        node: g.nodes,
        name: "test".into(),
        initializer: g.initializers,
        input: vec![value_info("input", &[None, Some(c), Some(h), Some(w)])],
        output: vec![value_info(&x, &[None, None])],
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: 7,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 13 }],
        producer_name: "kana-inference testing".into(),
        graph: Some(graph),
        ..Default::default()
    };
    model.encode_to_vec()
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
    include_str!("../../../fixtures/k49/k49_classmap.csv")
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut cols = line.split(',');
            let index = cols.next().unwrap().parse().unwrap();
            let codepoint = cols.next().map(str::to_owned);
            let label = cols.next().unwrap_or_default().to_owned();
            Class { index, label, codepoint }
        })
        .collect()
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
            channels: if input[0] == 1 { ChannelMode::Grayscale } else { ChannelMode::ReplicateGrayscale },
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

/// Writes `<name>.onnx` and `<name>.card.json` into `dir`; returns the card.
pub fn write_model(dir: &Path, card: &ModelCard, onnx: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(&card.file), onnx)?;
    std::fs::write(dir.join(format!("{}{}", card.name, crate::card::CARD_SUFFIX)), serde_json::to_vec_pretty(card)?)
}

/// Converts ONNX bytes into a gzipped NNEF archive with the same graph and symbolic batch.
pub fn nnef_bytes(onnx_model: &[u8], input: [usize; 3]) -> anyhow::Result<Vec<u8>> {
    use tract_onnx::prelude::*;
    let model = tract_onnx::onnx().model_for_read(&mut std::io::Cursor::new(onnx_model))?;
    let n = model.sym("N");
    let [c, h, w] = input;
    let typed = model
        .with_input_fact(0, f32::fact(tract_onnx::tract_core::dims!(n, c, h, w)).into())?
        .with_output_fact(0, InferenceFact::default())?
        .into_typed()?
        .into_decluttered()?;
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let gz = tract_nnef::nnef().with_onnx().write_to_tar(&typed, gz)?;
    Ok(gz.finish()?)
}

/// The reference-size K49 CNN (random weights) written to `dir` as `name`; with `nnef` also an
/// NNEF archive that the card points to.
pub fn write_reference_cnn(dir: &Path, name: &str, seed: u64, nnef: bool) -> anyhow::Result<ModelCard> {
    let layers = reference_cnn(seed, 49);
    let onnx = onnx_bytes([1, 28, 28], &layers);
    let mut card = test_card(name, [1, 28, 28], k49_classes(), OutputKind::Logits, &onnx);
    if nnef {
        let archive = nnef_bytes(&onnx, [1, 28, 28])?;
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
