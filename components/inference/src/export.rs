//! Writing models for tract (feature `export`): [`GraphBuilder`], the one ONNX writer (opset 13,
//! built from the `tract_onnx::pb` protobuf types and encoded with prost), and [`nnef_tgz`], the one
//! ONNX → NNEF conversion. The trainer's export and `testing` both write through them, so
//! every graph this workspace makes uses the same ops, attributes and conventions, and is read back
//! by the one loader, [`crate::model::onnx_graph`].
//!
//! Conventions: input `"input"` [N, C, H, W] with a symbolic batch `N`; float initializers as
//! little-endian `raw_data`; node `i` is named `<op>_<i>` with output `<op>_<i>_out`.

use prost::Message;
use tract_onnx::pb::{
    self, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TypeProto,
    ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
};

pub const OPSET: i64 = 13;
/// The IR version that goes with opset 13.
pub const IR_VERSION: i64 = 7;
pub const INPUT_NAME: &str = "input";
/// The symbolic batch dimension of the input and output.
pub const BATCH: &str = "N";

/// What a finished graph says about itself besides its nodes.
#[derive(Clone, Debug)]
pub struct GraphInfo<'a> {
    pub name: &'a str,
    pub producer_name: &'a str,
    pub producer_version: &'a str,
    pub doc: String,
    /// [C, H, W] of one input image.
    pub input: [usize; 3],
    /// Name given to the graph output.
    pub output: &'a str,
    /// Output width, written as the output's second dimension (unknown when `None`).
    pub classes: Option<usize>,
}

/// Nodes and initializers of an ONNX graph under construction. Each op method takes its input
/// names and returns the name of its output.
#[derive(Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl GraphBuilder {
    pub fn new() -> GraphBuilder {
        GraphBuilder::default()
    }

    /// Adds a float initializer `name` of `shape` and returns its name.
    pub fn tensor(&mut self, name: String, shape: &[usize], data: impl IntoIterator<Item = f32>) -> String {
        let raw = data.into_iter().flat_map(f32::to_le_bytes).collect();
        self.initializer(name, shape, DataType::Float, raw)
    }

    /// Adds an int64 initializer (a shape, say) and returns its name.
    pub fn tensor_i64(&mut self, name: String, shape: &[usize], data: &[i64]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(name, shape, DataType::Int64, raw)
    }

    fn initializer(&mut self, name: String, shape: &[usize], data_type: DataType, raw_data: Vec<u8>) -> String {
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: data_type as i32,
            raw_data,
            ..Default::default()
        });
        name
    }

    /// An op without attributes (`Relu`, `Add`, `MatMul`, `GlobalAveragePool`, `Dropout`, ...).
    pub fn op(&mut self, op: &str, inputs: Vec<String>) -> String {
        self.node(op, inputs, vec![])
    }

    fn node(&mut self, op: &str, input: Vec<String>, attribute: Vec<AttributeProto>) -> String {
        let name = format!("{}_{}", op.to_lowercase(), self.nodes.len());
        let output = format!("{name}_out");
        self.nodes.push(NodeProto {
            input,
            output: vec![output.clone()],
            name,
            op_type: op.into(),
            attribute,
            ..Default::default()
        });
        output
    }

    /// Square kernel, the same stride and zero padding on both axes; weight [out, in, k, k].
    pub fn conv(&mut self, x: String, weight: String, bias: String, kernel: usize, stride: usize, pad: usize) -> String {
        let (k, s, p) = (kernel as i64, stride as i64, pad as i64);
        let attributes =
            vec![ints("kernel_shape", &[k, k]), ints("strides", &[s, s]), ints("pads", &[p, p, p, p]), ints("dilations", &[1, 1]), int("group", 1)];
        self.node("Conv", vec![x, weight, bias], attributes)
    }

    /// Inference-mode batch norm with `[gamma, beta, running_mean, running_var]`. `momentum` is
    /// ONNX's: the weight of the old running value (1 − PyTorch's momentum); tract ignores it.
    pub fn batch_norm(&mut self, x: String, params: [String; 4], epsilon: f32, momentum: f32) -> String {
        let mut inputs = vec![x];
        inputs.extend(params);
        self.node("BatchNormalization", inputs, vec![float("epsilon", epsilon), float("momentum", momentum)])
    }

    /// No padding, square window.
    pub fn max_pool(&mut self, x: String, kernel: usize, stride: usize) -> String {
        let (k, s) = (kernel as i64, stride as i64);
        self.node("MaxPool", vec![x], vec![ints("kernel_shape", &[k, k]), ints("strides", &[s, s]), ints("pads", &[0, 0, 0, 0])])
    }

    /// [N, ...] → [N, rest] (axis 1).
    pub fn flatten(&mut self, x: String) -> String {
        self.node("Flatten", vec![x], vec![int("axis", 1)])
    }

    /// y = x · Wᵀ + b with weight [out, in] (PyTorch's Linear layout).
    pub fn gemm(&mut self, x: String, weight: String, bias: String) -> String {
        self.node("Gemm", vec![x, weight, bias], vec![float("alpha", 1.0), float("beta", 1.0), int("transB", 1)])
    }

    /// Softmax over axis 1.
    pub fn softmax(&mut self, x: String) -> String {
        self.node("Softmax", vec![x], vec![int("axis", 1)])
    }

    /// The serialised model whose output is `output` (a node output or the input), renamed
    /// `info.output`.
    pub fn finish(mut self, output: String, info: GraphInfo) -> Vec<u8> {
        // Rename the last node's output, or add an Identity when no node produces it (no nodes,
        // or only ones the caller left out).
        match self.nodes.last_mut() {
            Some(last) if last.output[0] == output => last.output[0] = info.output.into(),
            _ => {
                self.node("Identity", vec![output], vec![]);
                self.nodes.last_mut().expect("just added").output[0] = info.output.into();
            }
        }
        let [c, h, w] = info.input;
        let graph = GraphProto {
            name: info.name.into(),
            node: self.nodes,
            initializer: self.initializers,
            input: vec![value_info(INPUT_NAME, &[None, Some(c), Some(h), Some(w)])],
            output: vec![value_info(info.output, &[None, info.classes])],
            ..Default::default()
        };
        ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
            producer_name: info.producer_name.into(),
            producer_version: info.producer_version.into(),
            doc_string: info.doc,
            graph: Some(graph),
            ..Default::default()
        }
        .encode_to_vec()
    }
}

/// A float tensor's type and shape; the first dimension is the batch `N`, `None` elsewhere is
/// an unknown size.
fn value_info(name: &str, dims: &[Option<usize>]) -> ValueInfoProto {
    use tensor_shape_proto::dimension::Value;
    let dim = dims
        .iter()
        .enumerate()
        .map(|(i, d)| tensor_shape_proto::Dimension {
            value: match (i, d) {
                (0, _) => Some(Value::DimParam(BATCH.into())),
                (_, Some(v)) => Some(Value::DimValue(*v as i64)),
                (_, None) => None,
            },
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

/// ONNX bytes → tract-nnef `.nnef.tgz` bytes with the same graph, batch still symbolic: loaded
/// by [`crate::model::onnx_graph`], decluttered (not optimised: optimised ops are tract-internal)
/// and written as a deterministic tar.gz.
pub fn nnef_tgz(onnx: &[u8], input: [usize; 3]) -> anyhow::Result<Vec<u8>> {
    use tract_onnx::WithOnnx;
    let model = crate::model::onnx_graph(onnx, input)?.into_decluttered()?;
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let gz = tract_nnef::nnef().with_onnx().write_to_tar_with_config(&model, gz, false, true)?;
    Ok(gz.finish()?)
}
