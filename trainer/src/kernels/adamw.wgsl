// AdamW over one flat parameter array; same arithmetic as `adamw::update`.
// hyper = [lr, 1 − β1^t, 1 − β2^t], written by the host each step.
override WG: u32 = 256u;

struct Params { n: u32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read_write> decay: array<f32>;
@group(0) @binding(6) var<storage, read_write> hyper: array<f32>;

@compute @workgroup_size(WG)
fn step(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * WG;
    if (i >= p.n) {
        return;
    }
    let gi = g[i];
    let mi = p.beta1 * m[i] + (1.0 - p.beta1) * gi;
    let vi = p.beta2 * v[i] + (1.0 - p.beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    let mhat = mi / hyper[1];
    let vhat = vi / hyper[2];
    w[i] = w[i] - hyper[0] * (mhat / (sqrt(vhat) + p.eps) + p.weight_decay * decay[i] * w[i]);
}
