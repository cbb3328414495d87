// im2col / col2im for a whole batch; the products run on matmul.wgsl.
// cols layout: [N][C·k·k][OH·OW], row r = (c·k + ky)·k + kx.
override WG: u32 = 256u;

struct Params { n: u32, c: u32, h: u32, w: u32, k: u32, s: u32, pad: u32, oh: u32, ow: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> cols: array<f32>;

// One invocation per cols element; n = N·C·k·k·OH·OW.
@compute @workgroup_size(WG)
fn im2col(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * WG;
    if (i >= p.n) {
        return;
    }
    let ohw = p.oh * p.ow;
    let kk = p.k * p.k;
    let o = i % ohw;
    let r = (i / ohw) % (p.c * kk);
    let img = i / (ohw * p.c * kk);
    let ci = r / kk;
    let ky = (r / p.k) % p.k;
    let kx = r % p.k;
    let iy = i32((o / p.ow) * p.s + ky) - i32(p.pad);
    let ix = i32((o % p.ow) * p.s + kx) - i32(p.pad);
    var v = 0.0;
    if (iy >= 0 && ix >= 0 && iy < i32(p.h) && ix < i32(p.w)) {
        v = x[((img * p.c + ci) * p.h + u32(iy)) * p.w + u32(ix)];
    }
    cols[i] = v;
}

// One invocation per image element (x = dx written, cols = dcols); n = N·C·H·W. A gather over
// the taps that read this pixel, so no atomics are needed.
@compute @workgroup_size(WG)
fn col2im(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * WG;
    if (i >= p.n) {
        return;
    }
    let ix = i % p.w;
    let iy = (i / p.w) % p.h;
    let ci = (i / (p.w * p.h)) % p.c;
    let img = i / (p.w * p.h * p.c);
    let ohw = p.oh * p.ow;
    let kk = p.k * p.k;
    var acc = 0.0;
    for (var ky = 0u; ky < p.k; ky = ky + 1u) {
        let ty = i32(iy + p.pad) - i32(ky);
        if (ty < 0 || ty % i32(p.s) != 0) {
            continue;
        }
        let oy = u32(ty) / p.s;
        if (oy >= p.oh) {
            continue;
        }
        for (var kx = 0u; kx < p.k; kx = kx + 1u) {
            let tx = i32(ix + p.pad) - i32(kx);
            if (tx < 0 || tx % i32(p.s) != 0) {
                continue;
            }
            let ox = u32(tx) / p.s;
            if (ox >= p.ow) {
                continue;
            }
            let r = (ci * p.k + ky) * p.k + kx;
            acc = acc + cols[(img * p.c * kk + r) * ohw + oy * p.ow + ox];
        }
    }
    x[i] = acc;
}
