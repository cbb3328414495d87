//! Upload bytes → a batch of grayscale images in pixel units (0–255).
//!
//! Accepted: multipart/form-data with field `upload_file` (the reference server's curl), or a raw
//! body as npz, PNG, JPEG or JSON. The format comes from the declared content type; for
//! `application/octet-stream` or no type (what curl sends for `-F f=@file` without `;type=`) it is
//! sniffed from the first bytes.

use std::io::Cursor;

use ndarray::{ArrayD, IxDyn, OwnedRepr};
use ndarray_npy::{NpzReader, ReadNpyError, ReadNpzError};

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

fn decode_npz(body: &[u8], height: usize, width: usize, limits: &Limits) -> Result<Images, InputError> {
    let garbled = |detail: String| InputError::Garbled { format: "npz", detail };
    // Look inside the zip first: pick the array and refuse huge ones before inflating them.
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
    let size = archive.by_name(&entry).map_err(|e| garbled(e.to_string()))?.size() as usize;
    let max_bytes = limits.max_images.saturating_mul(height * width * 8).saturating_add(4096);
    if size > max_bytes {
        return Err(InputError::TooLarge { bytes: size, limit: max_bytes });
    }
    drop(archive);

    let mut npz = NpzReader::new(Cursor::new(body)).map_err(|e| garbled(e.to_string()))?;
    let array = match npz.by_name::<OwnedRepr<u8>, IxDyn>(&name) {
        Ok(a) => return from_array(a.mapv(f32::from), false, height, width, limits),
        Err(e) => e,
    };
    let array = match array {
        ReadNpzError::Npy(ReadNpyError::WrongDescriptor(_)) => npz.by_name::<OwnedRepr<f32>, IxDyn>(&name),
        other => return Err(npy_error(other)),
    };
    let array = match array {
        Ok(a) => return from_array(a, true, height, width, limits),
        Err(ReadNpzError::Npy(ReadNpyError::WrongDescriptor(_))) => npz.by_name::<OwnedRepr<f64>, IxDyn>(&name),
        Err(other) => return Err(npy_error(other)),
    };
    match array {
        Ok(a) => from_array(a.mapv(|v| v as f32), true, height, width, limits),
        Err(other) => Err(npy_error(other)),
    }
}

fn npy_error(e: ReadNpzError) -> InputError {
    match e {
        ReadNpzError::Npy(ReadNpyError::WrongDescriptor(d)) => {
            InputError::WrongDtype(format!("{d} (expected uint8, float32 or float64)"))
        }
        other => InputError::Garbled { format: "npz", detail: other.to_string() },
    }
}

/// Checks the shape ((H,W), (N,H,W) or (N,1,H,W)) and the value range, then flattens.
/// Float input whose values all lie in [0, 1] is read as intensities and scaled to 0–255.
fn from_array(
    array: ArrayD<f32>,
    float: bool,
    height: usize,
    width: usize,
    limits: &Limits,
) -> Result<Images, InputError> {
    let shape = array.shape().to_vec();
    let count = match shape.as_slice() {
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
    let mut pixels: Vec<f32> = array.iter().copied().collect();
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
    let array = ArrayD::from_shape_vec(IxDyn(&shape), flat).map_err(|e| garbled(e.to_string()))?;
    if is_int {
        if array.iter().any(|&v| !(0.0..=255.0).contains(&v)) {
            return Err(InputError::OutOfRange("integers must be 0–255".into()));
        }
        return from_array(array, false, height, width, limits);
    }
    from_array(array, true, height, width, limits)
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
