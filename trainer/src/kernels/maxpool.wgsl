// Max pool (no padding). forward: one invocation per output, records the in-plane index of the
// max. backward: one invocation per input pixel, gathers dy from the windows that chose it.
override WG: u32 = 256u;

struct Params { n: u32, h: u32, w: u32, oh: u32, ow: u32, k: u32, s: u32 }

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
    let plane = i / (p.oh * p.ow);
    let oy = (i / p.ow) % p.oh;
    let ox = i % p.ow;
    var best = -3.402823e38;
    var at = 0u;
    for (var ky = 0u; ky < p.k; ky = ky + 1u) {
        for (var kx = 0u; kx < p.k; kx = kx + 1u) {
            let idx = (oy * p.s + ky) * p.w + ox * p.s + kx;
            let v = x[plane * p.h * p.w + idx];
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
    let plane = i / (p.h * p.w);
    let idx = i % (p.h * p.w);
    let iy = idx / p.w;
    let ix = idx % p.w;
    // Windows oy with oy·s ≤ iy < oy·s + k.
    let oy0 = select(0u, (iy + 1u - p.k + p.s - 1u) / p.s, iy + 1u >= p.k);
    let ox0 = select(0u, (ix + 1u - p.k + p.s - 1u) / p.s, ix + 1u >= p.k);
    let oy1 = min(iy / p.s, p.oh - 1u);
    let ox1 = min(ix / p.s, p.ow - 1u);
    var acc = 0.0;
    for (var oy = oy0; oy <= oy1; oy = oy + 1u) {
        for (var ox = ox0; ox <= ox1; ox = ox + 1u) {
            let o = plane * p.oh * p.ow + oy * p.ow + ox;
            if (arg[o] == idx) {
                acc = acc + y[o];
            }
        }
    }
    x[i] = acc;
}
