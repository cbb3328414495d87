// Inverted dropout, forward and backward alike: out = a · mask / (1 − p), mask from the counter
// RNG (seeds[slot], element index). pcg/uniform01 must stay identical to `rng.rs`.
override WG: u32 = 256u;

struct Params { n: u32, p: f32, slot: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> seeds: array<u32>;

fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

fn uniform01(seed: u32, index: u32) -> f32 {
    return f32(pcg(index ^ pcg(seed)) >> 8u) * (1.0 / 16777216.0);
}

@compute @workgroup_size(WG)
fn apply(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * WG;
    if (i < p.n) {
        let keep = select(1.0 / (1.0 - p.p), 0.0, uniform01(seeds[p.slot], i) < p.p);
        out[i] = a[i] * keep;
    }
}
