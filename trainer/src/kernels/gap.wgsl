// Global average pool: forward y[nc] = mean over hw of x[nc, :]; backward dx[nc, j] = dy[nc] / hw.
override WG: u32 = 256u;

struct Params { n: u32, hw: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// One invocation per (n, c); n = N·C.
@compute @workgroup_size(WG)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * WG;
    if (i < p.n) {
        var acc = 0.0;
        for (var j = 0u; j < p.hw; j = j + 1u) {
            acc = acc + x[i * p.hw + j];
        }
        y[i] = acc / f32(p.hw);
    }
}

// One invocation per input element; here x = dx (written) and y = dy; n = N·C·hw.
@compute @workgroup_size(WG)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * WG;
    if (i < p.n) {
        x[i] = y[i / p.hw] * (1.0 / f32(p.hw));
    }
}
