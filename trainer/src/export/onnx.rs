//! An [`Architecture`] plus its [`Weights`] as an ONNX model (opset 13), built from the
//! `tract_onnx::pb` protobuf types and encoded with prost. Eval-mode graph: batch-norm uses the
//! running statistics, dropout is left out. The batch dimension is symbolic ("N").

use anyhow::{Context, Result, ensure};
use prost::Message;
use tract_onnx::pb::{
    self, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TypeProto,
    ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
};

use crate::arch::{Architecture, Layer, Weights};
use crate::model;

pub const OPSET: i64 = 13;
/// IR version that goes with opset 13.
pub const IR_VERSION: i64 = 7;
pub const INPUT_NAME: &str = "input";
pub const OUTPUT_NAME: &str = "logits";

/// Serialised ONNX bytes.
pub fn to_onnx_bytes(arch: &Architecture, weights: &Weights) -> Result<Vec<u8>> {
    Ok(to_onnx(arch, weights)?.encode_to_vec())
}

pub fn to_onnx(arch: &Architecture, weights: &Weights) -> Result<ModelProto> {
    check_weights(arch, weights)?;
    let mut g = Builder::default();
    let out = g.layers(&arch.layers, "", INPUT_NAME.to_string(), weights)?;
    // Name the graph output: rename the last node's output, or add an Identity when the graph
    // has no node producing it (no layers, or only dropout).
    match g.nodes.last_mut() {
        Some(last) if last.output[0] == out => last.output[0] = OUTPUT_NAME.into(),
        _ => g.node("Identity", vec![out], vec![]).output[0] = OUTPUT_NAME.into(),
    }
    let [c, h, w] = arch.input;
    let graph = GraphProto {
        name: arch.name.clone(),
        node: g.nodes,
        initializer: g.initializers,
        input: vec![value_info(INPUT_NAME, &[Dim::N, Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)])],
        output: vec![value_info(OUTPUT_NAME, &[Dim::N, Dim::Fixed(arch.classes)])],
        ..Default::default()
    };
    Ok(ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
        producer_name: "kana-trainer".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!("{} ({} classes)", arch.name, arch.classes),
        graph: Some(graph),
        ..Default::default()
    })
}

/// Every tensor the architecture needs is present with the right shape.
fn check_weights(arch: &Architecture, weights: &Weights) -> Result<()> {
    for spec in model::tensors(arch) {
        let t = weights.get(&spec.name).with_context(|| format!("checkpoint has no tensor {}", spec.name))?;
        ensure!(t.shape() == spec.shape, "tensor {} has shape {:?}, architecture wants {:?}", spec.name, t.shape(), spec.shape);
        ensure!(t.iter().all(|v| v.is_finite()), "tensor {} has non-finite values", spec.name);
    }
    Ok(())
}

#[derive(Default)]
struct Builder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

enum Dim {
    N,
    Fixed(usize),
}

impl Builder {
    /// Adds a node with one fresh output and returns it.
    fn node(&mut self, op: &str, input: Vec<String>, attribute: Vec<AttributeProto>) -> &mut NodeProto {
        let name = format!("{}_{}", op.to_lowercase(), self.nodes.len());
        self.nodes.push(NodeProto {
            input,
            output: vec![format!("{name}_out")],
            name,
            op_type: op.into(),
            attribute,
            ..Default::default()
        });
        self.nodes.last_mut().unwrap()
    }

    fn op(&mut self, op: &str, input: Vec<String>, attribute: Vec<AttributeProto>) -> String {
        self.node(op, input, attribute).output[0].clone()
    }

    /// Adds the tensor `name` as an initializer and returns its name.
    fn init(&mut self, weights: &Weights, name: String) -> String {
        let t = &weights[&name];
        let raw: Vec<u8> = t.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: t.shape().iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            raw_data: raw,
            ..Default::default()
        });
        name
    }

    fn layers(&mut self, layers: &[Layer], prefix: &str, mut x: String, w: &Weights) -> Result<String> {
        for (i, layer) in layers.iter().enumerate() {
            x = self.layer(layer, &format!("{prefix}{i}"), x, w)?;
        }
        Ok(x)
    }

    fn layer(&mut self, layer: &Layer, p: &str, x: String, w: &Weights) -> Result<String> {
        Ok(match *layer {
            Layer::Conv2d { kernel, stride, pad, .. } => {
                let inputs = vec![x, self.init(w, format!("{p}.weight")), self.init(w, format!("{p}.bias"))];
                let k = kernel as i64;
                let (s, pd) = (stride as i64, pad as i64);
                self.op(
                    "Conv",
                    inputs,
                    vec![ints("kernel_shape", &[k, k]), ints("strides", &[s, s]), ints("pads", &[pd, pd, pd, pd]), ints("dilations", &[1, 1]), int("group", 1)],
                )
            }
            Layer::BatchNorm2d { eps, momentum, .. } => {
                let inputs = ["gamma", "beta", "running_mean", "running_var"].map(|t| self.init(w, format!("{p}.{t}")));
                let mut all = vec![x];
                all.extend(inputs);
                // ONNX momentum is the weight of the old running value: 1 - PyTorch's momentum.
                self.op("BatchNormalization", all, vec![float("epsilon", eps), float("momentum", 1.0 - momentum)])
            }
            Layer::Relu => self.op("Relu", vec![x], vec![]),
            Layer::MaxPool2d { kernel, stride } => {
                let (k, s) = (kernel as i64, stride as i64);
                self.op("MaxPool", vec![x], vec![ints("kernel_shape", &[k, k]), ints("strides", &[s, s]), ints("pads", &[0, 0, 0, 0])])
            }
            // Identity at inference time.
            Layer::Dropout { .. } => x,
            Layer::GlobalAvgPool => {
                let pooled = self.op("GlobalAveragePool", vec![x], vec![]);
                self.op("Flatten", vec![pooled], vec![int("axis", 1)])
            }
            Layer::Flatten => self.op("Flatten", vec![x], vec![int("axis", 1)]),
            Layer::Linear { .. } => {
                let inputs = vec![x, self.init(w, format!("{p}.weight")), self.init(w, format!("{p}.bias"))];
                // weight is [out, in]: y = x · Wᵀ + b.
                self.op("Gemm", inputs, vec![float("alpha", 1.0), float("beta", 1.0), int("transB", 1)])
            }
            Layer::Residual { ref body, ref shortcut } => {
                let yb = self.layers(body, &format!("{p}.body."), x.clone(), w)?;
                let ys = self.layers(shortcut, &format!("{p}.shortcut."), x, w)?;
                self.op("Add", vec![yb, ys], vec![])
            }
        })
    }
}

fn value_info(name: &str, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::N => tensor_shape_proto::dimension::Value::DimParam("N".into()),
                Dim::Fixed(v) => tensor_shape_proto::dimension::Value::DimValue(*v as i64),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Ints as i32, ints: v.to_vec(), ..Default::default() }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i: v, ..Default::default() }
}

fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Float as i32, f: v, ..Default::default() }
}
