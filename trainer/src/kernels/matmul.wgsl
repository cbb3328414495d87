// Batched, strided C = A·B with 16×16 tiles staged in workgroup memory. Element (i, k) of A is
// a[a_off + batch·a_bs + i·a_rs + k·a_cs] (likewise B), so transposes are just strides.
// flags bit 0: accumulate into C; bit 1: reduce over the batch (C = Σ_b A_b·B_b, one output).
// The tile is a plain constant: it sizes the workgroup arrays and the 2-D workgroup together.
const T: u32 = 16u;

struct Params {
    m: u32, n: u32, k: u32, batch: u32,
    a_off: u32, a_rs: u32, a_cs: u32, a_bs: u32,
    b_off: u32, b_rs: u32, b_cs: u32, b_bs: u32,
    c_off: u32, c_rs: u32, c_bs: u32, flags: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

var<workgroup> ta: array<array<f32, 16>, 16>;
var<workgroup> tb: array<array<f32, 16>, 16>;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let row = wg.y * T + l.y;
    let col = wg.x * T + l.x;
    let reduce = (p.flags & 2u) != 0u;
    var first = wg.z;
    var last = wg.z + 1u;
    if (reduce) {
        first = 0u;
        last = p.batch;
    }
    var acc = 0.0;
    for (var bi = first; bi < last; bi = bi + 1u) {
        for (var t0 = 0u; t0 < p.k; t0 = t0 + T) {
            let ka = t0 + l.x;
            var va = 0.0;
            if (row < p.m && ka < p.k) {
                va = a[p.a_off + bi * p.a_bs + row * p.a_rs + ka * p.a_cs];
            }
            ta[l.y][l.x] = va;
            let kb = t0 + l.y;
            var vb = 0.0;
            if (kb < p.k && col < p.n) {
                vb = b[p.b_off + bi * p.b_bs + kb * p.b_rs + col * p.b_cs];
            }
            tb[l.y][l.x] = vb;
            workgroupBarrier();
            for (var i = 0u; i < T; i = i + 1u) {
                acc = acc + ta[l.y][i] * tb[i][l.x];
            }
            workgroupBarrier();
        }
    }
    if (row < p.m && col < p.n) {
        let idx = p.c_off + wg.z * p.c_bs + row * p.c_rs + col;
        if ((p.flags & 1u) != 0u) {
            c[idx] = c[idx] + acc;
        } else {
            c[idx] = acc;
        }
    }
}
