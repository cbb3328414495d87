//! An [`Architecture`] plus its [`Weights`] as an ONNX model, written with `kana-inference`'s
//! [`GraphBuilder`] (the one ONNX writer; opset 13). Eval-mode graph: batch-norm uses the running
//! statistics, dropout is left out. The batch dimension is symbolic ("N"); initializers carry the
//! checkpoint's tensor names.

use anyhow::{Context, Result, ensure};
use kana_inference::export::{GraphBuilder, GraphInfo, INPUT_NAME};

use crate::arch::{Architecture, Layer, Weights};
use crate::model;

pub const OUTPUT_NAME: &str = "logits";

/// Serialised ONNX bytes.
pub fn to_onnx_bytes(arch: &Architecture, weights: &Weights) -> Result<Vec<u8>> {
    check_weights(arch, weights)?;
    let mut g = GraphBuilder::new();
    let output = write_layers(&mut g, &arch.layers, "", INPUT_NAME.to_string(), weights);
    Ok(g.finish(output, GraphInfo {
        name: &arch.name,
        producer_name: "kana-trainer",
        producer_version: env!("CARGO_PKG_VERSION"),
        doc: format!("{} ({} classes)", arch.name, arch.classes),
        input: arch.input,
        output: OUTPUT_NAME,
        classes: Some(arch.classes),
    }))
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

/// Adds the checkpoint tensor `name` as an initializer and returns its name.
fn init(g: &mut GraphBuilder, w: &Weights, name: String) -> String {
    let t = &w[&name];
    g.tensor(name, t.shape(), t.iter().copied())
}

fn write_layers(g: &mut GraphBuilder, layers: &[Layer], prefix: &str, mut x: String, w: &Weights) -> String {
    for (i, layer) in layers.iter().enumerate() {
        let p = format!("{prefix}{i}");
        x = match *layer {
            Layer::Conv2d { kernel, stride, pad, .. } => {
                let (weight, bias) = (init(g, w, format!("{p}.weight")), init(g, w, format!("{p}.bias")));
                g.conv(x, weight, bias, kernel, stride, pad)
            }
            Layer::BatchNorm2d { eps, momentum, .. } => {
                let params = ["gamma", "beta", "running_mean", "running_var"].map(|t| init(g, w, format!("{p}.{t}")));
                // ONNX momentum is the weight of the old running value: 1 - PyTorch's momentum.
                g.batch_norm(x, params, eps, 1.0 - momentum)
            }
            Layer::Relu => g.op("Relu", vec![x]),
            Layer::MaxPool2d { kernel, stride } => g.max_pool(x, kernel, stride),
            // Identity at inference time.
            Layer::Dropout { .. } => x,
            Layer::GlobalAvgPool => {
                let pooled = g.op("GlobalAveragePool", vec![x]);
                g.flatten(pooled)
            }
            Layer::Flatten => g.flatten(x),
            Layer::Linear { .. } => {
                let (weight, bias) = (init(g, w, format!("{p}.weight")), init(g, w, format!("{p}.bias")));
                g.gemm(x, weight, bias)
            }
            Layer::Residual { ref body, ref shortcut } => {
                let yb = write_layers(g, body, &format!("{p}.body."), x.clone(), w);
                let ys = write_layers(g, shortcut, &format!("{p}.shortcut."), x, w);
                g.op("Add", vec![yb, ys])
            }
        };
    }
    x
}
