//! Optimisers (AdamW, SGD-momentum) and the learning-rate schedule. The per-element update rules
//! live in `kernels/adamw.rs` / `kernels/sgd.rs` (shared with the GPU twins); here they are
//! applied to CPU [`Weights`].

use std::collections::BTreeMap;

use clap::ValueEnum;
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

use crate::kernels::{adamw, sgd};
use crate::model::{Architecture, TensorKind, Weights, tensors};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Adamw,
    Sgd,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    pub kind: OptimizerKind,
    pub lr: f32,
    pub weight_decay: f32,
    /// SGD momentum; AdamW uses β1 = 0.9, β2 = 0.999, ε = 1e-8.
    pub momentum: f32,
}

/// One-cycle style: linear warm-up over the first `warmup` fraction, then cosine decay to 0.
pub fn lr_at(base: f32, step: usize, total: usize, warmup: f32) -> f32 {
    let total = total.max(1) as f32;
    let t = step as f32 / total;
    if t < warmup {
        // Capped at `base`: in runs of a handful of steps warmup·total is below one step.
        (base * (step as f32 + 1.0) / (warmup * total)).min(base)
    } else {
        let progress = ((t - warmup) / (1.0 - warmup)).clamp(0.0, 1.0);
        base * 0.5 * (1.0 + (std::f32::consts::PI * progress).cos())
    }
}

/// 1.0 for tensors that get weight decay (conv / linear weights), 0.0 otherwise.
pub fn decay_mask(arch: &Architecture) -> BTreeMap<String, f32> {
    tensors(arch)
        .into_iter()
        .filter_map(|t| match t.kind {
            TensorKind::Trainable { decay } => Some((t.name, if decay { 1.0 } else { 0.0 })),
            TensorKind::Buffer => None,
        })
        .collect()
}

/// Optimiser state for the CPU backend: first/second moments (AdamW) or velocity (SGD).
#[derive(Clone, Debug)]
pub struct CpuOptimizer {
    pub config: OptimConfig,
    pub step: u32,
    decay: BTreeMap<String, f32>,
    m: Weights,
    v: Weights,
}

impl CpuOptimizer {
    pub fn new(arch: &Architecture, config: OptimConfig) -> Self {
        let decay = decay_mask(arch);
        let zeros: Weights =
            tensors(arch).into_iter().filter(|t| decay.contains_key(&t.name)).map(|t| (t.name, ArrayD::zeros(t.shape))).collect();
        Self { config, step: 0, decay, m: zeros.clone(), v: zeros }
    }

    pub fn update(&mut self, weights: &mut Weights, grads: &Weights, lr: f32) {
        self.step += 1;
        let c = self.config;
        for (name, decay) in &self.decay {
            let w = weights.get_mut(name).expect("weight").as_slice_mut().expect("contiguous");
            let g = grads.get(name).unwrap_or_else(|| panic!("no gradient for {name}"));
            let g = g.as_standard_layout();
            let g = g.as_slice().unwrap();
            let m = self.m.get_mut(name).unwrap().as_slice_mut().unwrap();
            match c.kind {
                OptimizerKind::Adamw => {
                    let p = adamw::AdamWParams { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: c.weight_decay, step: self.step };
                    let v = self.v.get_mut(name).unwrap().as_slice_mut().unwrap();
                    for i in 0..w.len() {
                        adamw::update(&p, &mut w[i], g[i], &mut m[i], &mut v[i], *decay);
                    }
                }
                OptimizerKind::Sgd => {
                    let p = sgd::SgdParams { lr, momentum: c.momentum, weight_decay: c.weight_decay };
                    for i in 0..w.len() {
                        sgd::update(&p, &mut w[i], g[i], &mut m[i], *decay);
                    }
                }
            }
        }
    }

    /// State to checkpoint: ("m.<name>", "v.<name>") tensors.
    pub fn state(&self) -> Weights {
        let mut out = Weights::new();
        for (k, a) in &self.m {
            out.insert(format!("m.{k}"), a.clone());
        }
        for (k, a) in &self.v {
            out.insert(format!("v.{k}"), a.clone());
        }
        out
    }

    pub fn load_state(&mut self, state: &Weights, step: u32) {
        self.step = step;
        for (k, a) in self.m.iter_mut() {
            if let Some(s) = state.get(&format!("m.{k}")) {
                *a = s.clone();
            }
        }
        for (k, a) in self.v.iter_mut() {
            if let Some(s) = state.get(&format!("v.{k}")) {
                *a = s.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert!(lr_at(1.0, 0, 100, 0.1) < 0.2);
        assert!((lr_at(1.0, 10, 100, 0.1) - 1.0).abs() < 1e-3);
        assert!(lr_at(1.0, 99, 100, 0.1) < 0.01);
        // Tiny runs (2 steps, warm-up shorter than a step) never exceed the peak.
        assert!(lr_at(1.0, 0, 2, 0.1) <= 1.0);
    }
}
