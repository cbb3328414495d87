//! Upload bytes → a batch of grayscale images in pixel units (0–255).
//!
//! Accepted: multipart/form-data with field `upload_file` (the reference server's curl), or a raw
//! body as npz, PNG, JPEG or JSON. The format comes from the declared content type; for
//! `application/octet-stream` or no type (what curl sends for `-F f=@file` without `;type=`) it is
//! sniffed from the first bytes.

use std::io::{Cursor, Read};

use crate::error::InputError;

/// A batch of `count` grayscale images of `height`×`width`, row-major, values in 0.0..=255.0
/// (dark strokes are high values, like the K49/MNIST datasets).
#[derive(Clone, Debug, PartialEq)]
pub struct Images {
    pub count: usize,
    pub height: usize,
    pub width: usize,
    pub pixels: Vec<f32>,
}

impl Images {
    /// One image's pixels.
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.height * self.width;
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Images `start..end` as their own batch (used to split large uploads into chunks).
    pub fn slice(&self, start: usize, end: usize) -> Images {
        let n = self.height * self.width;
        Images {
            count: end - start,
            height: self.height,
            width: self.width,
            pixels: self.pixels[start * n..end * n].to_vec(),
        }
    }

    /// From uint8 pixels, N×H×W.
    pub fn from_u8(count: usize, height: usize, width: usize, pixels: &[u8]) -> Images {
        assert_eq!(pixels.len(), count * height * width, "pixel buffer does not match N×H×W");
        Images { count, height, width, pixels: pixels.iter().map(|&p| p as f32).collect() }
    }
}

/// Limits a request must respect (Spin variables `max_images`, `max_upload_bytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_images: usize,
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_images: 1000, max_body_bytes: 4 * 1024 * 1024 }
    }
}

/// The formats a body can be in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Npz,
    Png,
    Jpeg,
    Json,
}

/// Decodes an upload (whole request body plus its Content-Type) into images of `height`×`width`.
/// npz/JSON arrays must already have that size; PNG/JPEG are fitted to it.
pub fn decode_upload(
    content_type: Option<&str>,
    body: &[u8],
    height: usize,
    width: usize,
    limits: &Limits,
) -> Result<Images, InputError> {
    if body.len() > limits.max_body_bytes {
        return Err(InputError::TooLarge { bytes: body.len(), limit: limits.max_body_bytes });
    }
    if body.is_empty() {
        return Err(InputError::Empty);
    }
    let essence = content_type.map(mime_essence);
    let (ct, payload) = match essence.as_deref() {
        Some("multipart/form-data") => {
            let (ct, bytes) = multipart_field(content_type.unwrap_or_default(), body)?;
            (ct, std::borrow::Cow::Owned(bytes.to_vec()))
        }
        _ => (essence, std::borrow::Cow::Borrowed(body)),
    };
    if payload.is_empty() {
        return Err(InputError::Empty);
    }
    let images = match detect_format(ct.as_deref(), &payload)? {
        Format::Npz => decode_npz(&payload, height, width, limits)?,
        Format::Json => decode_json(&payload, height, width, limits)?,
        Format::Png => decode_picture(&payload, image::ImageFormat::Png, height, width)?,
        Format::Jpeg => decode_picture(&payload, image::ImageFormat::Jpeg, height, width)?,
    };
    Ok(images)
}

/// "Multipart/Form-Data; boundary=x" → "multipart/form-data".
fn mime_essence(ct: &str) -> String {
    ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// Picks the format from the declared type, sniffing the bytes when the type says nothing.
pub fn detect_format(content_type: Option<&str>, body: &[u8]) -> Result<Format, InputError> {
    match content_type {
        Some("application/x-npz" | "application/npz" | "application/zip") => Ok(Format::Npz),
        Some("image/png") => Ok(Format::Png),
        Some("image/jpeg" | "image/jpg") => Ok(Format::Jpeg),
        Some("application/json") => Ok(Format::Json),
        None | Some("application/octet-stream") | Some("") => sniff(body).ok_or_else(|| {
            InputError::UnsupportedType(format!(
                "{} (content not recognised as npz, PNG, JPEG or JSON)",
                content_type.unwrap_or("none")
            ))
        }),
        Some(other) => Err(InputError::UnsupportedType(other.to_string())),
    }
}

fn sniff(body: &[u8]) -> Option<Format> {
    if body.starts_with(b"PK\x03\x04") {
        Some(Format::Npz)
    } else if body.starts_with(b"\x89PNG") {
        Some(Format::Png)
    } else if body.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else {
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'[' | b'{') => Some(Format::Json),
            _ => None,
        }
    }
}

/// Extracts the `upload_file` field (bytes and its own content type) from a multipart body.
fn multipart_field(content_type: &str, body: &[u8]) -> Result<(Option<String>, bytes::Bytes), InputError> {
    let garbled = |e: multer::Error| InputError::Garbled { format: "multipart/form-data", detail: e.to_string() };
    let boundary = multer::parse_boundary(content_type).map_err(garbled)?;
    let data = bytes::Bytes::copy_from_slice(body);
    let stream = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(data) });
    let mut form = multer::Multipart::new(stream, boundary);
    // The body is already in memory, so every future here completes without waiting.
    futures::executor::block_on(async {
        while let Some(field) = form.next_field().await.map_err(garbled)? {
            if field.name() == Some("upload_file") {
                let ct = field.content_type().map(|m| m.essence_str().to_ascii_lowercase());
                let bytes = field.bytes().await.map_err(garbled)?;
                return Ok((ct, bytes));
            }
        }
        Err(InputError::MissingField)
    })
}

/// Largest `.npy` header accepted: numpy writes ~128 bytes; a v2/v3 header may declare up to 4 GB,
/// which would be allocated before parsing.
const MAX_NPY_HEADER: usize = 64 * 1024;

/// Decodes the array `arr_0` (or the only array) of an npz, refusing anything too big before it
/// is allocated: the .npy header is checked (dtype, shape, image count) first, the member is read
/// through a limit that does not trust the zip's declared size, and the values are converted
/// straight into the final pixel buffer.
fn decode_npz(body: &[u8], height: usize, width: usize, limits: &Limits) -> Result<Images, InputError> {
    let garbled = |detail: String| InputError::Garbled { format: "npz", detail };
    let mut archive = zip::ZipArchive::new(Cursor::new(body))
        .map_err(|e| garbled(format!("not a zip archive as written by numpy.savez ({e})")))?;
    let names: Vec<String> = archive.file_names().map(str::to_owned).collect();
    let name = if names.iter().any(|n| n == "arr_0.npy" || n == "arr_0") {
        "arr_0".to_string()
    } else if names.len() == 1 {
        names[0].strip_suffix(".npy").unwrap_or(&names[0]).to_string()
    } else {
        return Err(garbled(format!("expected key 'arr_0' or exactly one array, found {names:?}")));
    };
    let entry = names.iter().find(|n| **n == name || **n == format!("{name}.npy")).cloned().unwrap_or_default();
    let member = archive.by_name(&entry).map_err(|e| garbled(e.to_string()))?;
    let max_data = limits.max_images.saturating_mul(height * width * 8);
    let declared = member.size() as usize;
    if declared > max_data.saturating_add(MAX_NPY_HEADER) {
        return Err(InputError::TooLarge { bytes: declared, limit: max_data.saturating_add(MAX_NPY_HEADER) });
    }
    // Counts what actually inflates, whatever the zip says.
    let mut reader = member.take((max_data + MAX_NPY_HEADER) as u64 + 1);
    let header = read_npy_header(&mut reader)?;
    let dtype = NpyDtype::parse(&header.type_descriptor.to_string())?;
    let count = image_count(&header.shape, height, width, limits)?;
    let values = count * height * width;
    let mut pixels = Vec::with_capacity(values);
    let mut chunk = vec![0u8; 8192 * dtype.size];
    while pixels.len() < values {
        let want = ((values - pixels.len()) * dtype.size).min(chunk.len());
        reader.read_exact(&mut chunk[..want]).map_err(|e| {
            garbled(format!("the array data ends early ({e}): {} of {values} values read", pixels.len()))
        })?;
        pixels.extend(chunk[..want].chunks_exact(dtype.size).map(|b| dtype.value(b)));
    }
    if header.layout.is_fortran() {
        pixels = fortran_to_c(&pixels, &header.shape);
    }
    finish_pixels(pixels, dtype.float, count, height, width)
}

/// Reads the .npy header after checking its declared length (see `MAX_NPY_HEADER`).
fn read_npy_header(reader: &mut impl Read) -> Result<ndarray_npy::npy::header::Header, InputError> {
    let garbled = |detail: String| InputError::Garbled { format: "npz", detail };
    // Magic (6 bytes), version (2), then the header length: u16 in v1, u32 in v2/v3.
    let mut prefix = [0u8; 12];
    reader.read_exact(&mut prefix[..10]).map_err(|e| garbled(format!("not an .npy array ({e})")))?;
    let (len, used) = match prefix[6] {
        1 => (u16::from_le_bytes([prefix[8], prefix[9]]) as usize, 10),
        _ => {
            reader.read_exact(&mut prefix[10..12]).map_err(|e| garbled(format!("not an .npy array ({e})")))?;
            (u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]) as usize, 12)
        }
    };
    if len > MAX_NPY_HEADER {
        return Err(garbled(format!("the .npy header claims {len} bytes (at most {MAX_NPY_HEADER})")));
    }
    ndarray_npy::npy::header::Header::from_reader(&mut (&prefix[..used]).chain(reader))
        .map_err(|e| garbled(format!("bad .npy header: {e}")))
}

/// The element types accepted, with their byte order.
struct NpyDtype {
    size: usize,
    float: bool,
    big_endian: bool,
}

impl NpyDtype {
    /// From numpy's descriptor as the header prints it, e.g. `'|u1'`, `'<f4'`, `'>f8'`.
    fn parse(descr: &str) -> Result<NpyDtype, InputError> {
        let d = descr.trim_matches(['\'', '"']);
        let (order, code) = match d.chars().next() {
            Some(c @ ('<' | '>' | '|' | '=')) => (c, &d[1..]),
            _ => ('=', d),
        };
        let big_endian = order == '>';
        match code {
            "u1" | "B" => Ok(NpyDtype { size: 1, float: false, big_endian }),
            "f4" => Ok(NpyDtype { size: 4, float: true, big_endian }),
            "f8" => Ok(NpyDtype { size: 8, float: true, big_endian }),
            _ => Err(InputError::WrongDtype(format!("{d} (expected uint8, float32 or float64)"))),
        }
    }

    fn value(&self, b: &[u8]) -> f32 {
        match (self.size, self.big_endian) {
            (1, _) => b[0] as f32,
            (4, false) => f32::from_le_bytes(b.try_into().expect("4 bytes")),
            (4, true) => f32::from_be_bytes(b.try_into().expect("4 bytes")),
            (_, false) => f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
            (_, true) => f64::from_be_bytes(b.try_into().expect("8 bytes")) as f32,
        }
    }
}

/// Column-major (numpy `fortran_order`) values in row-major order.
fn fortran_to_c(values: &[f32], shape: &[usize]) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    let mut index = vec![0usize; shape.len()];
    for (f, &v) in values.iter().enumerate() {
        // `f` walks the array first axis fastest; place it at its row-major offset.
        let mut rest = f;
        for (axis, &n) in shape.iter().enumerate() {
            index[axis] = rest % n.max(1);
            rest /= n.max(1);
        }
        let c = index.iter().zip(shape).fold(0, |acc, (&i, &n)| acc * n + i);
        out[c] = v;
    }
    out
}

/// The number of images in an array of `shape` ((H,W), (N,H,W) or (N,1,H,W)), within limits.
fn image_count(shape: &[usize], height: usize, width: usize, limits: &Limits) -> Result<usize, InputError> {
    let count = match shape {
        [h, w] if *h == height && *w == width => 1,
        [n, h, w] if *h == height && *w == width => *n,
        [n, 1, h, w] if *h == height && *w == width => *n,
        _ => {
            return Err(InputError::WrongShape {
                got: format!("{shape:?}, expected [{height}, {width}], [N, {height}, {width}] or [N, 1, {height}, {width}]"),
            });
        }
    };
    if count == 0 {
        return Err(InputError::WrongShape { got: format!("{shape:?}: the batch holds no images") });
    }
    if count > limits.max_images {
        return Err(InputError::TooManyImages { count, limit: limits.max_images });
    }
    Ok(count)
}

/// Checks the value range of row-major pixels and wraps them. Float input whose values all lie
/// in [0, 1] is read as intensities and scaled to 0–255.
fn finish_pixels(mut pixels: Vec<f32>, float: bool, count: usize, height: usize, width: usize) -> Result<Images, InputError> {
    if float {
        let (lo, hi) = pixels.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        if pixels.iter().any(|v| !v.is_finite()) || lo < 0.0 || hi > 255.0 {
            return Err(InputError::OutOfRange(format!(
                "values span [{lo}, {hi}]; expected 0–1 intensities or 0–255 pixels"
            )));
        }
        if hi <= 1.0 {
            pixels.iter_mut().for_each(|v| *v *= 255.0);
        }
    }
    Ok(Images { count, height, width, pixels })
}

fn decode_json(body: &[u8], height: usize, width: usize, limits: &Limits) -> Result<Images, InputError> {
    let garbled = |detail: String| InputError::Garbled { format: "JSON", detail };
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| garbled(e.to_string()))?;
    let value = match value {
        serde_json::Value::Object(mut map) => {
            map.remove("images").ok_or_else(|| garbled("object without an 'images' key".into()))?
        }
        v => v,
    };
    // Shape from the first element at each depth; `flatten` then checks every row has it.
    let mut shape = Vec::new();
    let mut cursor = &value;
    while let serde_json::Value::Array(items) = cursor {
        shape.push(items.len());
        match items.first() {
            Some(first) => cursor = first,
            None => break,
        }
    }
    if shape.len() < 2 || shape.len() > 4 {
        return Err(InputError::WrongShape { got: format!("nested arrays of depth {} ({shape:?})", shape.len()) });
    }
    let total: usize = shape.iter().product();
    if total > limits.max_images.saturating_mul(height * width) {
        let per = (height * width).max(1);
        return Err(InputError::TooManyImages { count: total / per, limit: limits.max_images });
    }
    let mut flat = Vec::with_capacity(total);
    let mut is_int = true;
    flatten(&value, &shape, &mut flat, &mut is_int).map_err(|d| InputError::WrongShape { got: d })?;
    let count = image_count(&shape, height, width, limits)?;
    if is_int && flat.iter().any(|&v| !(0.0..=255.0).contains(&v)) {
        return Err(InputError::OutOfRange("integers must be 0–255".into()));
    }
    finish_pixels(flat, !is_int, count, height, width)
}

fn flatten(v: &serde_json::Value, shape: &[usize], out: &mut Vec<f32>, is_int: &mut bool) -> Result<(), String> {
    match (v, shape) {
        (serde_json::Value::Array(items), [n, rest @ ..]) if items.len() == *n => {
            items.iter().try_for_each(|item| flatten(item, rest, out, is_int))
        }
        (serde_json::Value::Array(items), [n, ..]) => Err(format!("ragged arrays: a row of {} where {n} was expected", items.len())),
        (serde_json::Value::Number(num), []) => {
            *is_int &= num.is_u64() || num.is_i64();
            out.push(num.as_f64().unwrap_or(f64::NAN) as f32);
            Ok(())
        }
        (other, _) => Err(format!("expected a number or an array, found {other}")),
    }
}

/// PNG/JPEG → grayscale, composited on white, light backgrounds inverted, fitted to
/// `height`×`width` keeping the aspect ratio (padding with background).
fn decode_picture(body: &[u8], format: image::ImageFormat, height: usize, width: usize) -> Result<Images, InputError> {
    let name = if format == image::ImageFormat::Png { "PNG" } else { "JPEG" };
    let mut reader = image::ImageReader::with_format(Cursor::new(body), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(8192);
    limits.max_image_height = Some(8192);
    limits.max_alloc = Some(128 * 1024 * 1024);
    reader.limits(limits);
    let picture = reader.decode().map_err(|e| InputError::Garbled { format: name, detail: e.to_string() })?;
    let gray = picture.to_luma_alpha8();
    let (w, h) = gray.dimensions();
    // Transparent pixels count as white paper.
    let mut plain = image::GrayImage::new(w, h);
    for (dst, src) in plain.pixels_mut().zip(gray.pixels()) {
        let [l, a] = src.0;
        let a = a as f32 / 255.0;
        dst.0 = [(l as f32 * a + 255.0 * (1.0 - a)).round() as u8];
    }
    // Datasets have light strokes on black: invert pictures whose border (the paper) is light.
    let border: Vec<u8> = plain
        .enumerate_pixels()
        .filter(|(x, y, _)| *x == 0 || *y == 0 || *x == w - 1 || *y == h - 1)
        .map(|(_, _, p)| p.0[0])
        .collect();
    let border_mean = border.iter().map(|&b| b as f32).sum::<f32>() / border.len().max(1) as f32;
    if border_mean > 127.0 {
        image::imageops::invert(&mut plain);
    }
    let scale = (width as f32 / w as f32).min(height as f32 / h as f32);
    let (nw, nh) = (((w as f32 * scale).round() as u32).clamp(1, width as u32), ((h as f32 * scale).round() as u32).clamp(1, height as u32));
    let resized = image::imageops::resize(&plain, nw, nh, image::imageops::FilterType::Triangle);
    let mut canvas = image::GrayImage::new(width as u32, height as u32);
    image::imageops::overlay(&mut canvas, &resized, ((width as u32 - nw) / 2) as i64, ((height as u32 - nh) / 2) as i64);
    Ok(Images { count: 1, height, width, pixels: canvas.into_raw().into_iter().map(f32::from).collect() })
}
