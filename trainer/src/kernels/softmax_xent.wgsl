// Fused softmax cross-entropy with label smoothing. forward_backward: one invocation per sample
// writes d(mean loss)/d logits and (loss, correct) for the sample. reduce: one workgroup sums
// those into accum[0] (loss) and accum[1] (correct), which persist across steps until cleared.
override WG: u32 = 256u;

struct Params { n: u32, k: u32, smoothing: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(4) var<storage, read_write> per_sample: array<f32>;
@group(0) @binding(5) var<storage, read_write> accum: array<f32>;

var<workgroup> loss_part: array<f32, WG>;
var<workgroup> correct_part: array<f32, WG>;

@compute @workgroup_size(WG)
fn forward_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * WG;
    if (i >= p.n) {
        return;
    }
    let base = i * p.k;
    let label = labels[i];
    var best = -3.402823e38;
    var argmax = 0u;
    for (var j = 0u; j < p.k; j = j + 1u) {
        let v = logits[base + j];
        if (v > best) {
            best = v;
            argmax = j;
        }
    }
    var sum = 0.0;
    for (var j = 0u; j < p.k; j = j + 1u) {
        sum = sum + exp(logits[base + j] - best);
    }
    let log_z = best + log(sum);
    var loss = 0.0;
    for (var j = 0u; j < p.k; j = j + 1u) {
        let v = logits[base + j];
        let t = p.smoothing / f32(p.k) + select(0.0, 1.0 - p.smoothing, j == label);
        loss = loss - t * (v - log_z);
        dlogits[base + j] = (exp(v - log_z) - t) / f32(p.n);
    }
    per_sample[2u * i] = loss;
    per_sample[2u * i + 1u] = select(0.0, 1.0, argmax == label);
}

@compute @workgroup_size(WG)
fn reduce(@builtin(local_invocation_id) l: vec3<u32>) {
    var loss = 0.0;
    var correct = 0.0;
    for (var i = l.x; i < p.n; i = i + WG) {
        loss = loss + per_sample[2u * i];
        correct = correct + per_sample[2u * i + 1u];
    }
    loss_part[l.x] = loss;
    correct_part[l.x] = correct;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (l.x < s) {
            loss_part[l.x] = loss_part[l.x] + loss_part[l.x + s];
            correct_part[l.x] = correct_part[l.x] + correct_part[l.x + s];
        }
        workgroupBarrier();
    }
    if (l.x == 0u) {
        accum[0] = accum[0] + loss_part[0];
        accum[1] = accum[1] + correct_part[0];
    }
}
