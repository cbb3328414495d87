// Batched, strided C = A·B with 64×64 output tiles, their operands staged in workgroup memory
// 16 deep. Element (i, k) of A is a[a_off + batch·a_bs + i·a_rs + k·a_cs] (likewise B), so
// transposes are just strides. flags bit 0: accumulate into C; bit 1: reduce over the batch
// (C = Σ_b A_b·B_b, one output). The tile sizes are plain constants: they size the workgroup
// arrays and the register tile together.
const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

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

var<workgroup> ta: array<vec4<f32>, 256>; // [BK][BM/4]
var<workgroup> tb: array<vec4<f32>, 256>; // [BK][BN/4]

fn a_at(bi: u32, row: u32, k: u32) -> f32 {
    if (row >= p.m || k >= p.k) {
        return 0.0;
    }
    return a[p.a_off + bi * p.a_bs + row * p.a_rs + k * p.a_cs];
}

fn b_at(bi: u32, k: u32, col: u32) -> f32 {
    if (k >= p.k || col >= p.n) {
        return 0.0;
    }
    return b[p.b_off + bi * p.b_bs + k * p.b_rs + col * p.b_cs];
}

fn store(z: u32, row: u32, col: u32, v: f32) {
    if (row >= p.m || col >= p.n) {
        return;
    }
    let idx = p.c_off + z * p.c_bs + row * p.c_rs + col;
    if ((p.flags & 1u) != 0u) {
        c[idx] = c[idx] + v;
    } else {
        c[idx] = v;
    }
}

// Each workgroup computes a 64×64 tile of C in 8×8 invocations of 8×8 outputs each (the same
// register tiling as conv2d.wgsl: 4 vec4 loads from workgroup memory per 64 multiply-adds).
@compute @workgroup_size(8, 8, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let t = l.y * 8u + l.x;
    let m0 = wg.y * BM;
    let n0 = wg.x * BN;
    let reduce = (p.flags & 2u) != 0u;
    var first = wg.z;
    var last = wg.z + 1u;
    if (reduce) {
        first = 0u;
        last = p.batch;
    }
    var acc: array<vec4<f32>, 16>;
    for (var bi = first; bi < last; bi = bi + 1u) {
        for (var k0 = 0u; k0 < p.k; k0 = k0 + BK) {
            for (var q = 0u; q < 4u; q = q + 1u) {
                let v = t + 64u * q;
                let k = k0 + v / 16u;
                let c4 = (v % 16u) * 4u;
                ta[v] = vec4(a_at(bi, m0 + c4, k), a_at(bi, m0 + c4 + 1u, k), a_at(bi, m0 + c4 + 2u, k), a_at(bi, m0 + c4 + 3u, k));
                tb[v] = vec4(b_at(bi, k, n0 + c4), b_at(bi, k, n0 + c4 + 1u), b_at(bi, k, n0 + c4 + 2u), b_at(bi, k, n0 + c4 + 3u));
            }
            workgroupBarrier();
            for (var k = 0u; k < BK; k = k + 1u) {
                let a0 = ta[k * 16u + l.y];
                let a1 = ta[k * 16u + l.y + 8u];
                let b0 = tb[k * 16u + l.x];
                let b1 = tb[k * 16u + l.x + 8u];
                acc[0] = acc[0] + a0.x * b0;
                acc[1] = acc[1] + a0.x * b1;
                acc[2] = acc[2] + a0.y * b0;
                acc[3] = acc[3] + a0.y * b1;
                acc[4] = acc[4] + a0.z * b0;
                acc[5] = acc[5] + a0.z * b1;
                acc[6] = acc[6] + a0.w * b0;
                acc[7] = acc[7] + a0.w * b1;
                acc[8] = acc[8] + a1.x * b0;
                acc[9] = acc[9] + a1.x * b1;
                acc[10] = acc[10] + a1.y * b0;
                acc[11] = acc[11] + a1.y * b1;
                acc[12] = acc[12] + a1.z * b0;
                acc[13] = acc[13] + a1.z * b1;
                acc[14] = acc[14] + a1.w * b0;
                acc[15] = acc[15] + a1.w * b1;
            }
            workgroupBarrier();
        }
    }
    // Invocation (l.x, l.y) owns rows 4·l.y..+3 and 32+4·l.y..+3, columns 4·l.x..+3 and 32+4·l.x..+3.
    for (var i = 0u; i < 8u; i = i + 1u) {
        let row = m0 + (i / 4u) * 32u + l.y * 4u + i % 4u;
        for (var h = 0u; h < 2u; h = h + 1u) {
            let col = n0 + h * 32u + l.x * 4u;
            let v = acc[i * 2u + h];
            store(wg.z, row, col, v.x);
            store(wg.z, row, col + 1u, v.y);
            store(wg.z, row, col + 2u, v.z);
            store(wg.z, row, col + 3u, v.w);
        }
    }
}
