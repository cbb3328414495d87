//! Test support for kernels and models (compiled for tests only): the test device, running
//! dispatches to completion, tolerances (all in one place) and the GPU-vs-CPU comparison every
//! kernel test uses.

use std::sync::OnceLock;

use super::Dispatch;
use crate::gpu::{self, Gpu};

/// The device kernel tests use: any adapter (lavapipe in CI). `None` — and a printed reason —
/// only when the machine has no adapter at all, so tests skip cleanly there.
pub fn test_gpu() -> Option<Gpu> {
    static GPU: OnceLock<Option<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| match gpu::open(wgpu::Backends::all(), None) {
        Ok(gpu) => Some(gpu),
        Err(e) => {
            eprintln!("SKIP: no wgpu adapter: {e:#}");
            None
        }
    })
    .clone()
}

/// Runs `dispatches` in one compute pass and waits for them.
pub fn run(gpu: &Gpu, dispatches: &[&Dispatch]) {
    super::submit(gpu, dispatches.iter().copied());
    gpu.device.poll(wgpu::PollType::wait_indefinitely()).expect("device lost");
}

/// |gpu − cpu| ≤ abs + rel·|cpu| element-wise.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub abs: f32,
    pub rel: f32,
}

/// Element-wise ops that do the same float operations in the same order.
pub const EXACT_ISH: Tolerance = Tolerance { abs: 1e-6, rel: 1e-6 };
/// Sums and products over up to a few thousand terms (summation order differs).
pub const REDUCTION: Tolerance = Tolerance { abs: 1e-4, rel: 1e-4 };
/// Ops with transcendental functions (exp/ln/sin/cos/sqrt) whose GPU precision is looser.
pub const TRANSCENDENTAL: Tolerance = Tolerance { abs: 2e-4, rel: 1e-3 };
/// Finite differences (f64 central differences of f32 CPU code): |analytic − numeric|.
pub const FINITE_DIFF: Tolerance = Tolerance { abs: 2e-3, rel: 2e-2 };
/// A whole training step (many kernels composed) against the CPU backend.
pub const COMPOSED: Tolerance = Tolerance { abs: 1e-3, rel: 1e-3 };

pub fn close(a: f32, b: f32, tol: Tolerance) -> bool {
    (a - b).abs() <= tol.abs + tol.rel * b.abs()
}

/// Panics with the worst element when the GPU result differs from the CPU twin.
pub fn assert_gpu_matches_cpu(op: &str, gpu: &[f32], cpu: &[f32], tol: Tolerance) {
    assert_eq!(gpu.len(), cpu.len(), "{op}: GPU produced {} values, CPU {}", gpu.len(), cpu.len());
    assert!(!cpu.is_empty(), "{op}: nothing to compare");
    let mut worst: Option<(usize, f32)> = None;
    let mut bad = 0;
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        if !close(g, c, tol) || g.is_nan() != c.is_nan() {
            bad += 1;
            let err = (g - c).abs();
            if worst.is_none_or(|(_, e)| err > e) {
                worst = Some((i, err));
            }
        }
    }
    if let Some((i, err)) = worst {
        panic!("{op}: {bad}/{} values differ beyond {tol:?}; worst at {i}: gpu {} cpu {} (|Δ| {err})", cpu.len(), gpu[i], cpu[i]);
    }
}

/// Random values in [-1, 1) from the counter RNG (tests need no extra dependency).
pub fn random(n: usize, seed: u32) -> Vec<f32> {
    (0..n).map(|i| super::rng::uniform(seed, i as u32) * 2.0 - 1.0).collect()
}

/// Checks an analytic gradient against central differences of a scalar function.
/// `f` maps the flat input to the loss; `grad` is the analytic gradient at `x`.
/// Probes `probes` evenly spaced coordinates.
pub fn check_finite_diff(op: &str, x: &[f32], grad: &[f32], probes: usize, f: impl Fn(&[f32]) -> f64) {
    check_finite_diff_step(op, x, grad, probes, 1e-2, f)
}

/// [`check_finite_diff`] with step `h`: whole models want a smaller step so that a probe rarely
/// crosses a ReLU or max-pool kink (where central differences are meaningless).
pub fn check_finite_diff_step(op: &str, x: &[f32], grad: &[f32], probes: usize, h: f32, f: impl Fn(&[f32]) -> f64) {
    let step = (x.len() / probes.max(1)).max(1);
    let f0 = f(x);
    let (mut checked, mut kinks) = (0, 0);
    for i in (0..x.len()).step_by(step) {
        let mut xp = x.to_vec();
        xp[i] += h;
        let mut xm = x.to_vec();
        xm[i] -= h;
        let (fp, fm) = (f(&xp), f(&xm));
        // A probe that straddles a ReLU / max-pool kink has different one-sided slopes there;
        // central differences mean nothing at such a point, so it is skipped (and counted).
        let (right, left) = (((fp - f0) / h as f64) as f32, ((f0 - fm) / h as f64) as f32);
        if !close(right, left, FINITE_DIFF) && !close(left, right, FINITE_DIFF) {
            kinks += 1;
            continue;
        }
        let numeric = ((fp - fm) / (2.0 * h as f64)) as f32;
        assert!(
            close(grad[i], numeric, FINITE_DIFF),
            "{op}: d/dx[{i}] analytic {} vs numeric {numeric}",
            grad[i]
        );
        checked += 1;
    }
    assert!(checked > kinks, "{op}: only {checked} probes checked, {kinks} sat on kinks");
}
