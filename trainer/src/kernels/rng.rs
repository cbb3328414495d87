//! Counter-based random numbers shared bit-for-bit by the WGSL kernels (dropout, augmentation) and
//! their CPU twins: the PCG hash of "Hash Functions for GPU Rendering" (Jarzynski & Olano, 2020).
//! A counter RNG needs no state on the GPU, so a step is reproducible from (seed, element index).
//! The same function is copied into `dropout.wgsl` and `augment.wgsl`; keep them identical.

/// PCG-RXS-M-XS 32-bit hash.
pub fn pcg_hash(input: u32) -> u32 {
    let state = input.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// Uniform in [0, 1) with 24 bits, exactly representable as f32 (identical on GPU and CPU).
pub fn uniform(seed: u32, index: u32) -> f32 {
    (pcg_hash(index ^ pcg_hash(seed)) >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Mixes a 64-bit seed and a stream number (epoch, step, tensor) into a 32-bit kernel seed.
pub fn derive_seed(seed: u64, stream: u64) -> u32 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_is_in_range_and_roughly_flat() {
        let n = 100_000;
        let mean: f64 = (0..n).map(|i| uniform(7, i) as f64).sum::<f64>() / n as f64;
        assert!((0..n).all(|i| (0.0..1.0).contains(&uniform(7, i))));
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        assert_ne!(uniform(1, 5), uniform(2, 5));
    }
}
