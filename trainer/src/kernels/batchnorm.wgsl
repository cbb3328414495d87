// Batch norm over (N, H, W) per channel, data [N, C, HW]. Paired tensors share a binding so the
// kernel stays within 8 storage buffers: affine = [γ | β], saved = [mean | 1/σ] (this step's
// batch statistics), running = [mean | var], daffine = [dγ | dβ].
// Training: stats (one workgroup per channel) → normalize. Backward: backward_reduce (one
// workgroup per channel) → backward_dx. Eval: eval.
// The shape is override constants (one pipeline per layer shape), so the index divisions are by
// constants: a division by a runtime value is a scalar loop over the lanes on CPU drivers.
override WG: u32 = 256u;
override BATCH: u32;
override C: u32;
override HW: u32;

struct Params { n: u32, c: u32, hw: u32, batch: u32, eps: f32, momentum: f32 }

@group(0) @binding(0) var<uniform> p: Params;
// x in forward, dy in backward.
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
// y in forward, dx in backward.
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> xhat: array<f32>;
@group(0) @binding(4) var<storage, read_write> affine: array<f32>;
@group(0) @binding(5) var<storage, read_write> saved: array<f32>;
@group(0) @binding(6) var<storage, read_write> running: array<f32>;
@group(0) @binding(7) var<storage, read_write> daffine: array<f32>;

var<workgroup> part_a: array<f32, WG>;
var<workgroup> part_b: array<f32, WG>;

fn at(c: u32, t: u32) -> u32 {
    return ((t / HW) * C + c) * HW + t % HW;
}

fn reduce_two(l: u32) {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (l < s) {
            part_a[l] = part_a[l] + part_a[l + s];
            part_b[l] = part_b[l] + part_b[l + s];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(WG)
fn stats(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let c = wg.x;
    let m = BATCH * HW;
    var acc = 0.0;
    for (var t = l.x; t < m; t = t + WG) {
        acc = acc + x[at(c, t)];
    }
    part_a[l.x] = acc;
    part_b[l.x] = 0.0;
    reduce_two(l.x);
    let mean = part_a[0] / f32(m);
    workgroupBarrier();
    var sq = 0.0;
    for (var t = l.x; t < m; t = t + WG) {
        let d = x[at(c, t)] - mean;
        sq = sq + d * d;
    }
    part_a[l.x] = 0.0;
    part_b[l.x] = sq;
    reduce_two(l.x);
    if (l.x == 0u) {
        let var_b = part_b[0] / f32(m);
        saved[c] = mean;
        saved[C + c] = 1.0 / sqrt(var_b + p.eps);
        let unbiased = select(1.0, f32(m) / f32(m - 1u), m > 1u);
        running[c] = (1.0 - p.momentum) * running[c] + p.momentum * mean;
        running[C + c] = (1.0 - p.momentum) * running[C + c] + p.momentum * var_b * unbiased;
    }
}

@compute @workgroup_size(WG)
fn normalize(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * WG;
    if (i < BATCH * C * HW) {
        let c = (i / HW) % C;
        let xh = (x[i] - saved[c]) * saved[C + c];
        xhat[i] = xh;
        y[i] = xh * affine[c] + affine[C + c];
    }
}

@compute @workgroup_size(WG)
fn eval(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * WG;
    if (i < BATCH * C * HW) {
        let c = (i / HW) % C;
        let scale = affine[c] / sqrt(running[C + c] + p.eps);
        let shift = affine[C + c] - running[c] * scale;
        y[i] = x[i] * scale + shift;
    }
}

@compute @workgroup_size(WG)
fn backward_reduce(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let c = wg.x;
    let m = BATCH * HW;
    var sum_dy = 0.0;
    var sum_dy_xhat = 0.0;
    for (var t = l.x; t < m; t = t + WG) {
        let i = at(c, t);
        sum_dy = sum_dy + x[i];
        sum_dy_xhat = sum_dy_xhat + x[i] * xhat[i];
    }
    part_a[l.x] = sum_dy_xhat;
    part_b[l.x] = sum_dy;
    reduce_two(l.x);
    if (l.x == 0u) {
        daffine[c] = part_a[0];
        daffine[C + c] = part_b[0];
    }
}

@compute @workgroup_size(WG)
fn backward_dx(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * WG;
    if (i < BATCH * C * HW) {
        let c = (i / HW) % C;
        let m = f32(BATCH * HW);
        let k = affine[c] * saved[C + c] / m;
        y[i] = (x[i] * m - daffine[C + c] - xhat[i] * daffine[c]) * k;
    }
}
