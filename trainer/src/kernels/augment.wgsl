// Random rotation / scale / shift / mirror with bilinear resampling, then an optional erased
// square (half the images), fused with normalisation x = (pixel − mean)/std. One invocation per
// output pixel; each image's transform comes from the counter RNG (seeds[0], seeds[1] + image).
// Must match `augment::transform` / `erased_square` / `cpu_apply`.
override WG: u32 = 256u;

struct Params { n: u32, h: u32, w: u32, rotate_rad: f32, scale: f32, shift_px: f32, mean: f32, std_dev: f32, flip: u32, erase_px: f32, erase_stream: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> raw: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> seeds: array<u32>;

// pcg / uniform01: rng.wgsl, prepended.

fn pixel(base: u32, x: f32, y: f32) -> f32 {
    if (x < 0.0 || y < 0.0 || x >= f32(p.w) || y >= f32(p.h)) {
        return 0.0;
    }
    return raw[base + u32(y) * p.w + u32(x)];
}

@compute @workgroup_size(WG)
fn apply(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * WG;
    if (i >= p.n) {
        return;
    }
    let plane = p.h * p.w;
    let img = i / plane;
    let x = f32(i % p.w);
    let y = f32((i / p.w) % p.h);
    let index = (seeds[1] + img) * 5u; // DRAWS in augment.rs
    let angle = (uniform01(seeds[0], index) * 2.0 - 1.0) * p.rotate_rad;
    let scale = 1.0 + (uniform01(seeds[0], index + 1u) * 2.0 - 1.0) * p.scale;
    let tx = (uniform01(seeds[0], index + 2u) * 2.0 - 1.0) * p.shift_px;
    let ty = (uniform01(seeds[0], index + 3u) * 2.0 - 1.0) * p.shift_px;
    var mirror = 1.0;
    if (p.flip != 0u && uniform01(seeds[0], index + 4u) * 2.0 - 1.0 < 0.0) {
        mirror = -1.0;
    }
    let s = sin(angle);
    let c = cos(angle);
    let a = mirror * c / scale;
    let b = s / scale;
    let cc = -mirror * s / scale;
    let d = c / scale;
    let cx = (f32(p.w) - 1.0) * 0.5;
    let cy = (f32(p.h) - 1.0) * 0.5;
    let px = x - cx - tx;
    let py = y - cy - ty;
    let sx = a * px + b * py + cx;
    let sy = cc * px + d * py + cy;
    let x0 = floor(sx);
    let y0 = floor(sy);
    let fx = sx - x0;
    let fy = sy - y0;
    let base = img * plane;
    if (p.erase_px > 0.0) {
        let e = (seeds[1] + img) * 3u; // erased_square in augment.rs
        let es = seeds[0] ^ p.erase_stream;
        if (uniform01(es, e) >= 0.5) {
            let ex = uniform01(es, e + 1u) * f32(p.w) - p.erase_px * 0.5;
            let ey = uniform01(es, e + 2u) * f32(p.h) - p.erase_px * 0.5;
            if (x >= ex && x < ex + p.erase_px && y >= ey && y < ey + p.erase_px) {
                out[i] = (0.0 - p.mean) / p.std_dev;
                return;
            }
        }
    }
    let top = pixel(base, x0, y0) * (1.0 - fx) + pixel(base, x0 + 1.0, y0) * fx;
    let bottom = pixel(base, x0, y0 + 1.0) * (1.0 - fx) + pixel(base, x0 + 1.0, y0 + 1.0) * fx;
    out[i] = ((top * (1.0 - fy) + bottom * fy) - p.mean) / p.std_dev;
}
