// Inverted dropout, forward and backward alike: out = a · mask / (1 − p), mask from the counter
// RNG (seeds[slot], element index) from rng.wgsl.
override WG: u32 = 256u;

struct Params { n: u32, p: f32, slot: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> seeds: array<u32>;

// pcg / uniform01: rng.wgsl, prepended.

@compute @workgroup_size(WG)
fn apply(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * WG;
    if (i < p.n) {
        let keep = select(1.0 / (1.0 - p.p), 0.0, uniform01(seeds[p.slot], i) < p.p);
        out[i] = a[i] * keep;
    }
}
