// 2-D convolution (NCHW, square kernel, zero padding) as an implicit GEMM: the im2col matrix is
// never stored; each invocation gathers the entries it needs straight from the activations.
// One pipeline per layer shape and MODE: the shape is `override` constants, so every index
// division below is by a constant (compiled to a multiply; a variable divisor is a slow scalar
// division per lane on CPU drivers such as lavapipe).
//
//   MODE 0, forward:          y[m=o,  j=(img,oy,ox)] = Σ_r w[o, r=(ci,ky,kx)] · x[img, ci, oy·S+ky−PAD, ox·S+kx−PAD] + bias[o]
//   MODE 1, backward data:   dx[m=ci, j=(img,iy,ix)] = Σ_r w[o, ci, ky, kx] · dy[img, o, (iy+PAD−ky)/S, (ix+PAD−kx)/S], r=(o,ky,kx),
//                            where the division is exact and in range (a gather, so no atomics)
//   MODE 2, backward weights: part[z, m=o, n] = Σ_{j in split z} dy[o, j] · cols[n, j], with cols the im2col
//                            matrix for n < C·K·K and a row of ones at n = C·K·K (its column is db);
//                            `reduce_splits` sums the splits into dw and db in a fixed order.
//
// Tiling, shaped for CPU drivers and still sound on GPUs. On lavapipe invocations are SIMD lanes:
// a load whose address differs per lane costs a scalar loop over the lanes, while one at a
// constant address can be a single load and a broadcast. A workgroup of LANES invocations
// computes 32 rows × 4·LANES columns. Its 32 × 16 slice of the row operand is staged in workgroup
// memory and read by every invocation at constant addresses; each invocation owns 4 columns LANES
// apart (adjacent invocations read adjacent pixels), gathers their 4 values per depth step and
// does 128 multiply-adds with them.
override MODE: u32;
override N: u32;
override C: u32;
override H: u32;
override W: u32;
override O: u32;
override K: u32;
override S: u32;
override PAD: u32;
override OH: u32;
override OW: u32;
// MODE 2: reduction elements per split (a multiple of BK) and number of splits.
override SPLIT: u32 = 1u;
override SPLITS: u32 = 1u;

// Invocations per workgroup: 64, fewer for backward weights when its C·K·K + 1 columns are few.
override LANES: u32 = 64u;
const BM: u32 = 32u;
const BK: u32 = 16u;

override KK: u32 = K * K;
override CKK: u32 = C * KK;
override OHW: u32 = OH * OW;
override HW: u32 = H * W;

@group(0) @binding(0) var<storage, read_write> w: array<f32>;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> dy: array<f32>;
// bias (MODE 0, read) or db (reduce_splits, written).
@group(0) @binding(3) var<storage, read_write> bias: array<f32>;
// y (MODE 0), dx (MODE 1) or the split partials (MODE 2, read by reduce_splits).
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> dw: array<f32>;

var<workgroup> ta: array<vec4<f32>, 128>; // [BK][BM/4]: rows 4i..4i+3 at depth k in ta[k·8 + i]
// acc[4i + u]: rows 4i..4i+3 of column u.
var<private> acc: array<vec4<f32>, 32>;

fn rows() -> u32 {
    return select(O, C, MODE == 1u);
}

fn cols() -> u32 {
    if (MODE == 0u) {
        return N * OHW;
    }
    if (MODE == 1u) {
        return N * HW;
    }
    return CKK + 1u;
}

fn depth() -> u32 {
    if (MODE == 0u) {
        return CKK;
    }
    if (MODE == 1u) {
        return O * KK;
    }
    return N * OHW;
}

// x[img, ci, oy·S+ky−PAD, ox·S+kx−PAD] for im2col row r = (ci, ky, kx), column j = (img, oy, ox).
fn im2col(r: u32, j: u32) -> f32 {
    let img = j / OHW;
    let pix = j % OHW;
    let ci = r / KK;
    let tap = r % KK;
    let iy = i32((pix / OW) * S + tap / K) - i32(PAD);
    let ix = i32((pix % OW) * S + tap % K) - i32(PAD);
    if (iy < 0 || ix < 0 || iy >= i32(H) || ix >= i32(W)) {
        return 0.0;
    }
    return x[((img * C + ci) * H + u32(iy)) * W + u32(ix)];
}

// Element (m, k) of the left operand; 0 outside it.
fn a_at(m: u32, k: u32) -> f32 {
    if (m >= rows() || k >= depth()) {
        return 0.0;
    }
    if (MODE == 0u) {
        return w[m * CKK + k];
    }
    if (MODE == 1u) {
        return w[(k / KK) * CKK + m * KK + k % KK];
    }
    return dy[((k / OHW) * O + m) * OHW + k % OHW];
}

// Element (k, n) of the right operand; 0 outside it.
fn b_at(k: u32, n: u32) -> f32 {
    if (k >= depth() || n >= cols()) {
        return 0.0;
    }
    if (MODE == 0u) {
        return im2col(k, n);
    }
    if (MODE == 1u) {
        let o = k / KK;
        let tap = k % KK;
        let img = n / HW;
        let pix = n % HW;
        let ty = i32(pix / W + PAD) - i32(tap / K);
        let tx = i32(pix % W + PAD) - i32(tap % K);
        if (ty < 0 || tx < 0 || u32(ty) % S != 0u || u32(tx) % S != 0u) {
            return 0.0;
        }
        let oy = u32(ty) / S;
        let ox = u32(tx) / S;
        if (oy >= OH || ox >= OW) {
            return 0.0;
        }
        return dy[((img * O + o) * OH + oy) * OW + ox];
    }
    if (n == CKK) {
        return 1.0;
    }
    return im2col(n, k);
}

fn store(m: u32, n: u32, v: f32, z: u32) {
    if (m >= rows() || n >= cols()) {
        return;
    }
    if (MODE == 0u) {
        out[((n / OHW) * O + m) * OHW + n % OHW] = v + bias[m];
    } else if (MODE == 1u) {
        out[((n / HW) * C + m) * HW + n % HW] = v;
    } else {
        out[(z * O + m) * (CKK + 1u) + n] = v;
    }
}

// One depth step (k a literal at each call, so the workgroup-memory reads have constant addresses).
fn step(k: u32, k0: u32, n: u32) {
    let b0 = b_at(k0 + k, n);
    let b1 = b_at(k0 + k, n + 1u * LANES);
    let b2 = b_at(k0 + k, n + 2u * LANES);
    let b3 = b_at(k0 + k, n + 3u * LANES);
    let a0 = ta[k * 8u + 0u];
    let a1 = ta[k * 8u + 1u];
    let a2 = ta[k * 8u + 2u];
    let a3 = ta[k * 8u + 3u];
    let a4 = ta[k * 8u + 4u];
    let a5 = ta[k * 8u + 5u];
    let a6 = ta[k * 8u + 6u];
    let a7 = ta[k * 8u + 7u];
    acc[0] = acc[0] + a0 * b0; acc[1] = acc[1] + a0 * b1; acc[2] = acc[2] + a0 * b2; acc[3] = acc[3] + a0 * b3;
    acc[4] = acc[4] + a1 * b0; acc[5] = acc[5] + a1 * b1; acc[6] = acc[6] + a1 * b2; acc[7] = acc[7] + a1 * b3;
    acc[8] = acc[8] + a2 * b0; acc[9] = acc[9] + a2 * b1; acc[10] = acc[10] + a2 * b2; acc[11] = acc[11] + a2 * b3;
    acc[12] = acc[12] + a3 * b0; acc[13] = acc[13] + a3 * b1; acc[14] = acc[14] + a3 * b2; acc[15] = acc[15] + a3 * b3;
    acc[16] = acc[16] + a4 * b0; acc[17] = acc[17] + a4 * b1; acc[18] = acc[18] + a4 * b2; acc[19] = acc[19] + a4 * b3;
    acc[20] = acc[20] + a5 * b0; acc[21] = acc[21] + a5 * b1; acc[22] = acc[22] + a5 * b2; acc[23] = acc[23] + a5 * b3;
    acc[24] = acc[24] + a6 * b0; acc[25] = acc[25] + a6 * b1; acc[26] = acc[26] + a6 * b2; acc[27] = acc[27] + a6 * b3;
    acc[28] = acc[28] + a7 * b0; acc[29] = acc[29] + a7 * b1; acc[30] = acc[30] + a7 * b2; acc[31] = acc[31] + a7 * b3;
}

fn store4(m: u32, n: u32, v: vec4<f32>, z: u32) {
    store(m, n, v.x, z);
    store(m + 1u, n, v.y, z);
    store(m + 2u, n, v.z, z);
    store(m + 3u, n, v.w, z);
}

@compute @workgroup_size(LANES, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let m0 = wg.y * BM;
    let n = wg.x * 4u * LANES + l.x;
    var k_begin = 0u;
    var k_end = depth();
    if (MODE == 2u) {
        k_begin = wg.z * SPLIT;
        k_end = min(k_end, k_begin + SPLIT);
    }
    for (var k0 = k_begin; k0 < k_end; k0 = k0 + BK) {
        // Stage the 32 × 16 row tile: 128 vec4.
        for (var v = l.x; v < 128u; v = v + LANES) {
            let k = k0 + v / 8u;
            let m = m0 + (v % 8u) * 4u;
            ta[v] = vec4(a_at(m, k), a_at(m + 1u, k), a_at(m + 2u, k), a_at(m + 3u, k));
        }
        workgroupBarrier();
        step(0u, k0, n);
        step(1u, k0, n);
        step(2u, k0, n);
        step(3u, k0, n);
        step(4u, k0, n);
        step(5u, k0, n);
        step(6u, k0, n);
        step(7u, k0, n);
        step(8u, k0, n);
        step(9u, k0, n);
        step(10u, k0, n);
        step(11u, k0, n);
        step(12u, k0, n);
        step(13u, k0, n);
        step(14u, k0, n);
        step(15u, k0, n);
        workgroupBarrier();
    }
    // Written out like `step`: every `acc` index a constant, so the accumulators can stay in registers.
    store4(m0 + 0u, n + 0u, acc[0], wg.z);
    store4(m0 + 0u, n + 1u * LANES, acc[1], wg.z);
    store4(m0 + 0u, n + 2u * LANES, acc[2], wg.z);
    store4(m0 + 0u, n + 3u * LANES, acc[3], wg.z);
    store4(m0 + 4u, n + 0u, acc[4], wg.z);
    store4(m0 + 4u, n + 1u * LANES, acc[5], wg.z);
    store4(m0 + 4u, n + 2u * LANES, acc[6], wg.z);
    store4(m0 + 4u, n + 3u * LANES, acc[7], wg.z);
    store4(m0 + 8u, n + 0u, acc[8], wg.z);
    store4(m0 + 8u, n + 1u * LANES, acc[9], wg.z);
    store4(m0 + 8u, n + 2u * LANES, acc[10], wg.z);
    store4(m0 + 8u, n + 3u * LANES, acc[11], wg.z);
    store4(m0 + 12u, n + 0u, acc[12], wg.z);
    store4(m0 + 12u, n + 1u * LANES, acc[13], wg.z);
    store4(m0 + 12u, n + 2u * LANES, acc[14], wg.z);
    store4(m0 + 12u, n + 3u * LANES, acc[15], wg.z);
    store4(m0 + 16u, n + 0u, acc[16], wg.z);
    store4(m0 + 16u, n + 1u * LANES, acc[17], wg.z);
    store4(m0 + 16u, n + 2u * LANES, acc[18], wg.z);
    store4(m0 + 16u, n + 3u * LANES, acc[19], wg.z);
    store4(m0 + 20u, n + 0u, acc[20], wg.z);
    store4(m0 + 20u, n + 1u * LANES, acc[21], wg.z);
    store4(m0 + 20u, n + 2u * LANES, acc[22], wg.z);
    store4(m0 + 20u, n + 3u * LANES, acc[23], wg.z);
    store4(m0 + 24u, n + 0u, acc[24], wg.z);
    store4(m0 + 24u, n + 1u * LANES, acc[25], wg.z);
    store4(m0 + 24u, n + 2u * LANES, acc[26], wg.z);
    store4(m0 + 24u, n + 3u * LANES, acc[27], wg.z);
    store4(m0 + 28u, n + 0u, acc[28], wg.z);
    store4(m0 + 28u, n + 1u * LANES, acc[29], wg.z);
    store4(m0 + 28u, n + 2u * LANES, acc[30], wg.z);
    store4(m0 + 28u, n + 3u * LANES, acc[31], wg.z);
}

// MODE 2 only: one invocation per (o, n): dw[o, n] (n < C·K·K) or db[o] (n = C·K·K) = Σ_z part[z, o, n].
@compute @workgroup_size(64, 1, 1)
fn reduce_splits(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= O * (CKK + 1u)) {
        return;
    }
    var s = 0.0;
    for (var z = 0u; z < SPLITS; z = z + 1u) {
        s = s + out[z * O * (CKK + 1u) + i];
    }
    let n = i % (CKK + 1u);
    let o = i / (CKK + 1u);
    if (n < CKK) {
        dw[o * CKK + n] = s;
    } else {
        bias[o] = s;
    }
}
