// SGD with momentum (PyTorch convention), L2 decay folded into the gradient; hyper = [lr].
override WG: u32 = 256u;

struct Params { n: u32, momentum: f32, weight_decay: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> velocity: array<f32>;
@group(0) @binding(4) var<storage, read_write> decay: array<f32>;
@group(0) @binding(5) var<storage, read_write> hyper: array<f32>;

@compute @workgroup_size(WG)
fn step(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * WG;
    if (i >= p.n) {
        return;
    }
    let gi = g[i] + p.weight_decay * decay[i] * w[i];
    let vi = p.momentum * velocity[i] + gi;
    velocity[i] = vi;
    w[i] = w[i] - hyper[0] * vi;
}
