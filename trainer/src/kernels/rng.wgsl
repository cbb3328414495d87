// Counter-based RNG shared by the kernels that draw random numbers (prepended to their source by
// `concat!`, WGSL has no imports). Must stay identical to `rng.rs`.

fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

fn uniform01(seed: u32, index: u32) -> f32 {
    return f32(pcg(index ^ pcg(seed)) >> 8u) * (1.0 / 16777216.0);
}
