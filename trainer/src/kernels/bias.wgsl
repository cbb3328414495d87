// Per-channel bias on [batch, c, inner] data (inner = H·W for conv, 1 for linear).
// add: y += bias[channel] in place. backward: db[c] = Σ over batch and inner of dy, one
// workgroup per channel with a tree reduction in workgroup memory.
override WG: u32 = 256u;

struct Params { n: u32, c: u32, inner: u32, batch: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> bias: array<f32>;

var<workgroup> part: array<f32, WG>;

@compute @workgroup_size(WG)
fn add(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * WG;
    if (i < p.n) {
        y[i] = y[i] + bias[(i / p.inner) % p.c];
    }
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let c = wg.x;
    var acc = 0.0;
    for (var t = l.x; t < p.batch * p.inner; t = t + WG) {
        let n = t / p.inner;
        acc = acc + y[(n * p.c + c) * p.inner + t % p.inner];
    }
    part[l.x] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (l.x < s) {
            part[l.x] = part[l.x] + part[l.x + s];
        }
        workgroupBarrier();
    }
    if (l.x == 0u) {
        bias[c] = part[0];
    }
}
