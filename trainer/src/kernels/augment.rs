//! On-the-fly augmentation fused with input normalisation: each image gets a random rotation,
//! scale, shift and (optionally) horizontal mirror (from the counter RNG: seed, image index), is
//! resampled bilinearly with the background (pixel 0) outside, optionally has a random square
//! erased to background (cutout / random erasing, on half the images), then is normalised
//! x = (p − mean)/std. With all ranges 0 it is just the normalisation, which is how eval batches
//! are prepared.

use ndarray::{Array4, ArrayView3, Zip};

use super::rng;

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AugmentParams {
    /// Max rotation in degrees (uniform in ±).
    pub rotate_deg: f32,
    /// Max relative scale change (uniform in 1 ± scale).
    pub scale: f32,
    /// Max shift in pixels on each axis.
    pub shift_px: f32,
    /// Mirror half of the images left-right (right for clothes, wrong for characters).
    #[serde(default)]
    pub flip: bool,
    /// Side in pixels of the square erased to background on half the images (0: off).
    #[serde(default)]
    pub erase_px: f32,
    pub mean: f32,
    pub std: f32,
}

impl AugmentParams {
    pub fn none(mean: f32, std: f32) -> Self {
        Self { rotate_deg: 0.0, scale: 0.0, shift_px: 0.0, flip: false, erase_px: 0.0, mean, std }
    }
}

/// Random draws per image: angle, scale, shift x, shift y, mirror.
const DRAWS: u32 = 5;

/// The inverse affine map (output pixel → source pixel) of image `image` as
/// [a, b, c, d, tx, ty]: src = [[a, b], [c, d]] · (p − centre − t) + centre.
/// A mirror negates the x column (source x of output x is the one of −x).
pub fn transform(p: &AugmentParams, seed: u32, image: u32) -> [f32; 6] {
    let u = |j: u32| rng::uniform(seed, image.wrapping_mul(DRAWS).wrapping_add(j)) * 2.0 - 1.0;
    let angle = u(0) * p.rotate_deg.to_radians();
    let scale = 1.0 + u(1) * p.scale;
    let (tx, ty) = (u(2) * p.shift_px, u(3) * p.shift_px);
    let mirror = if p.flip && u(4) < 0.0 { -1.0 } else { 1.0 };
    let (sin, cos) = angle.sin_cos();
    [mirror * cos / scale, sin / scale, -mirror * sin / scale, cos / scale, tx, ty]
}

/// Draws of the erased square come from their own stream (seed ^ ERASE_STREAM, image · 3 + j), so
/// turning erasing on leaves the geometric draws of a seed unchanged.
const ERASE_STREAM: u32 = 0x5bd1_e995;

/// The square erased from image `image` as [x0, y0, x1, y1] (half-open, may overhang the
/// border), or None when this image keeps all its pixels.
pub fn erased_square(p: &AugmentParams, seed: u32, image: u32, h: usize, w: usize) -> Option<[f32; 4]> {
    let u = |j: u32| rng::uniform(seed ^ ERASE_STREAM, image.wrapping_mul(3).wrapping_add(j));
    if p.erase_px <= 0.0 || u(0) < 0.5 {
        return None;
    }
    let (cx, cy) = (u(1) * w as f32, u(2) * h as f32);
    // Same arithmetic as augment.wgsl, so both twins agree on the border pixels.
    let (x0, y0) = (cx - p.erase_px * 0.5, cy - p.erase_px * 0.5);
    Some([x0, y0, x0 + p.erase_px, y0 + p.erase_px])
}

/// Bilinear sample of a [H, W] plane of pixels in [0, 1]; zero outside.
fn sample(img: &[f32], h: usize, w: usize, sx: f32, sy: f32) -> f32 {
    let (x0, y0) = (sx.floor(), sy.floor());
    let (fx, fy) = (sx - x0, sy - y0);
    let at = |x: f32, y: f32| -> f32 {
        if x < 0.0 || y < 0.0 || x >= w as f32 || y >= h as f32 { 0.0 } else { img[y as usize * w + x as usize] }
    };
    let top = at(x0, y0) * (1.0 - fx) + at(x0 + 1.0, y0) * fx;
    let bottom = at(x0, y0 + 1.0) * (1.0 - fx) + at(x0 + 1.0, y0 + 1.0) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// CPU twin: raw [N, H, W] pixels in [0, 1] → normalised, augmented [N, 1, H, W].
/// `first_index` is the global index of image 0 (so a step is reproducible).
pub fn cpu_apply(raw: ArrayView3<f32>, p: &AugmentParams, seed: u32, first_index: u32) -> Array4<f32> {
    let (n, h, w) = raw.dim();
    let raw = raw.as_standard_layout();
    let mut out = Array4::<f32>::zeros((n, 1, h, w));
    let identity = p.rotate_deg == 0.0 && p.scale == 0.0 && p.shift_px == 0.0 && !p.flip;
    Zip::indexed(out.outer_iter_mut()).par_for_each(|i, mut o| {
        let img = &raw.as_slice().unwrap()[i * h * w..][..h * w];
        let image = first_index.wrapping_add(i as u32);
        let [a, b, c, d, tx, ty] = transform(p, seed, image);
        let erased = erased_square(p, seed, image, h, w);
        let (cx, cy) = ((w as f32 - 1.0) * 0.5, (h as f32 - 1.0) * 0.5);
        for y in 0..h {
            for x in 0..w {
                let (xf, yf) = (x as f32, y as f32);
                let v = if erased.is_some_and(|[x0, y0, x1, y1]| xf >= x0 && xf < x1 && yf >= y0 && yf < y1) {
                    0.0
                } else if identity {
                    img[y * w + x]
                } else {
                    let (px, py) = (x as f32 - cx - tx, y as f32 - cy - ty);
                    sample(img, h, w, a * px + b * py + cx, c * px + d * py + cy)
                };
                o[[0, y, x]] = (v - p.mean) / p.std;
            }
        }
    });
    out
}

use super::{Arg, Dispatch, Kernel, Slot, f, groups_1d};
use crate::gpu::Gpu;

const SLOTS: &[Slot] = &[Slot::Uniform, Slot::Storage, Slot::Storage, Slot::Storage];

pub struct AugmentKernel {
    apply: Kernel,
}

impl AugmentKernel {
    pub fn new(gpu: &Gpu) -> Self {
        Self { apply: Kernel::new(gpu, "augment", concat!(include_str!("rng.wgsl"), include_str!("augment.wgsl")), "apply", SLOTS) }
    }

    /// raw [n, h, w] in [0, 1] → out [n, 1, h, w]; seed = seeds[0], first image index = seeds[1].
    pub fn apply(&self, gpu: &Gpu, p: &AugmentParams, raw: Arg, out: Arg, seeds: Arg, [n, h, w]: [usize; 3]) -> Dispatch {
        let total = n * h * w;
        let params = gpu.uniform(
            "augment",
            &[
                total as u32,
                h as u32,
                w as u32,
                f(p.rotate_deg.to_radians()),
                f(p.scale),
                f(p.shift_px),
                f(p.mean),
                f(p.std),
                p.flip as u32,
                f(p.erase_px),
                ERASE_STREAM,
            ],
        );
        self.apply.bind(gpu, &[(&params).into(), raw, out, seeds], groups_1d(total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::check::{TRANSCENDENTAL, assert_gpu_matches_cpu, run, test_gpu};
    use ndarray::Array3;

    /// Smooth test images (bilinear resampling of noise would amplify GPU sin/cos rounding).
    fn images(n: usize, h: usize, w: usize) -> Array3<f32> {
        Array3::from_shape_fn((n, h, w), |(i, y, x)| 0.5 + 0.5 * ((x as f32 * 0.3 + i as f32).sin() * (y as f32 * 0.2).cos()))
    }

    #[test]
    fn gpu_matches_cpu_with_and_without_augmentation() {
        let Some(gpu) = test_gpu() else { return };
        let (n, h, w) = (5, 28, 28);
        let raw = images(n, h, w);
        let k = AugmentKernel::new(&gpu);
        let graw = gpu.upload("raw", raw.as_slice().unwrap());
        let seeds = gpu.upload("seeds", &[42u32, 1000]);
        for p in [
            AugmentParams { rotate_deg: 12.0, scale: 0.1, shift_px: 2.5, flip: false, erase_px: 0.0, mean: 0.5, std: 0.5 },
            AugmentParams { rotate_deg: 5.0, scale: 0.0, shift_px: 1.0, flip: true, erase_px: 9.0, mean: 0.5, std: 0.5 },
            AugmentParams { erase_px: 12.0, ..AugmentParams::none(0.5, 0.5) },
            AugmentParams::none(0.2, 0.3),
        ] {
            let out = gpu.zeros("out", raw.len() as u64 * 4);
            run(&gpu, &[&k.apply(&gpu, &p, (&graw).into(), (&out).into(), (&seeds).into(), [n, h, w])]);
            let cpu = cpu_apply(raw.view(), &p, 42, 1000);
            assert_gpu_matches_cpu("augment", &gpu.read_f32(&out), cpu.as_slice().unwrap(), TRANSCENDENTAL);
        }
    }

    #[test]
    fn augmentation_changes_images_but_keeps_them_close() {
        let (n, h, w) = (8, 28, 28);
        let raw = images(n, h, w);
        let p = AugmentParams { rotate_deg: 10.0, scale: 0.1, shift_px: 2.0, flip: false, erase_px: 0.0, mean: 0.0, std: 1.0 };
        let plain = cpu_apply(raw.view(), &AugmentParams::none(0.0, 1.0), 1, 0);
        let aug = cpu_apply(raw.view(), &p, 1, 0);
        assert_eq!(plain.as_slice().unwrap(), raw.as_slice().unwrap());
        let diff = (&aug - &plain).mapv(f32::abs).mean().unwrap();
        assert!(diff > 0.01 && diff < 0.5, "mean |Δ| {diff}");
        assert_ne!(cpu_apply(raw.view(), &p, 2, 0), aug, "seed must matter");
    }

    /// Flip alone maps each image to itself or its exact left-right mirror, and does both.
    #[test]
    fn flip_mirrors_about_half_the_images_exactly() {
        let (n, h, w) = (64, 28, 28);
        let raw = images(n, h, w);
        let p = AugmentParams { flip: true, ..AugmentParams::none(0.0, 1.0) };
        let out = cpu_apply(raw.view(), &p, 7, 0);
        let mirrored = (0..n)
            .filter(|&i| {
                let same = (0..h).all(|y| (0..w).all(|x| (out[[i, 0, y, x]] - raw[[i, y, x]]).abs() < 1e-5));
                let mirror = (0..h).all(|y| (0..w).all(|x| (out[[i, 0, y, x]] - raw[[i, y, w - 1 - x]]).abs() < 1e-5));
                assert!(same ^ mirror, "image {i} is neither itself nor its mirror");
                mirror
            })
            .count();
        assert!((16..=48).contains(&mirrored), "{mirrored} of {n} mirrored");
    }

    /// Erasing blanks one rectangle (an 8x8 square, or less where it overhangs the border) on
    /// about half the images and leaves every other pixel as it was.
    #[test]
    fn erase_blanks_a_square_on_about_half_the_images() {
        let (n, h, w) = (64, 28, 28);
        let raw = Array3::from_elem((n, h, w), 0.75f32);
        let p = AugmentParams { erase_px: 8.0, ..AugmentParams::none(0.0, 1.0) };
        let out = cpu_apply(raw.view(), &p, 3, 100);
        assert!(out.iter().all(|&v| v == 0.0 || v == 0.75));
        let mut erased_images = 0;
        for i in 0..n {
            let blank: Vec<(usize, usize)> = (0..h).flat_map(|y| (0..w).map(move |x| (y, x))).filter(|&(y, x)| out[[i, 0, y, x]] == 0.0).collect();
            if blank.is_empty() {
                continue;
            }
            erased_images += 1;
            let (ys, xs): (Vec<usize>, Vec<usize>) = blank.iter().copied().unzip();
            let rows = ys.iter().max().unwrap() - ys.iter().min().unwrap() + 1;
            let cols = xs.iter().max().unwrap() - xs.iter().min().unwrap() + 1;
            assert_eq!(rows * cols, blank.len(), "image {i}: the blank pixels are not a rectangle");
            assert!(rows <= 8 && cols <= 8, "image {i}: {rows}x{cols}");
        }
        assert!((16..=48).contains(&erased_images), "{erased_images} of {n} erased");
    }
}
