// Max pool (no padding). forward: one invocation per output, records the in-plane index of the
// max. backward: one invocation per input pixel, gathers dy from the windows that chose it.
// The plane shape is override constants (one pipeline per layer), so the index divisions are by
// constants: a division by a runtime value is a scalar loop over the lanes on CPU drivers.
override WG: u32 = 256u;
override H: u32;
override W: u32;
override OH: u32;
override OW: u32;
override K: u32;
override S: u32;

struct Params { n: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> arg: array<u32>;

// n = N·C·OH·OW.
@compute @workgroup_size(WG)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * WG;
    if (i >= p.n) {
        return;
    }
    let plane = i / (OH * OW);
    let oy = (i / OW) % OH;
    let ox = i % OW;
    var best = -3.402823e38;
    var at = 0u;
    for (var ky = 0u; ky < K; ky = ky + 1u) {
        for (var kx = 0u; kx < K; kx = kx + 1u) {
            let idx = (oy * S + ky) * W + ox * S + kx;
            let v = x[plane * H * W + idx];
            if (v > best) {
                best = v;
                at = idx;
            }
        }
    }
    y[i] = best;
    arg[i] = at;
}

// Here x = dx (written), y = dy; n = N·C·H·W.
@compute @workgroup_size(WG)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * WG;
    if (i >= p.n) {
        return;
    }
    let plane = i / (H * W);
    let idx = i % (H * W);
    let iy = idx / W;
    let ix = idx % W;
    // Windows oy with oy·s ≤ iy < oy·s + k.
    let oy0 = select(0u, (iy + 1u - K + S - 1u) / S, iy + 1u >= K);
    let ox0 = select(0u, (ix + 1u - K + S - 1u) / S, ix + 1u >= K);
    let oy1 = min(iy / S, OH - 1u);
    let ox1 = min(ix / S, OW - 1u);
    var acc = 0.0;
    for (var oy = oy0; oy <= oy1; oy = oy + 1u) {
        for (var ox = ox0; ox <= ox1; ox = ox + 1u) {
            let o = plane * OH * OW + oy * OW + ox;
            if (arg[o] == idx) {
                acc = acc + y[o];
            }
        }
    }
    x[i] = acc;
}
