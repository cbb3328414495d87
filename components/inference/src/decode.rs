//! Upload bytes → a batch of grayscale images in pixel units (0–255).
//!
//! Accepted: multipart/form-data with field `upload_file` (the reference server's curl), or a raw
//! body as npz, PNG, JPEG or JSON. The format comes from the declared content type; for
//! `application/octet-stream` or no type (what curl sends for `-F f=@file` without `;type=`) it is
//! sniffed from the first bytes.

use std::io::{Cursor, Read};

use image::ImageDecoder;

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
    // The multipart field is kept as multer hands it over: no further copy of the upload.
    let field;
    let (ct, payload) = match essence.as_deref() {
        Some("multipart/form-data") => {
            let (ct, bytes) = multipart_field(content_type.unwrap_or_default(), body, limits.max_body_bytes)?;
            field = bytes;
            (ct, &field[..])
        }
        _ => (essence, body),
    };
    if payload.is_empty() {
        return Err(InputError::Empty);
    }
    let images = match detect_format(ct.as_deref(), payload)? {
        Format::Npz => decode_npz(payload, height, width, limits)?,
        Format::Json => decode_json(payload, height, width, limits)?,
        Format::Png => decode_picture(payload, image::ImageFormat::Png, height, width)?,
        Format::Jpeg => decode_picture(payload, image::ImageFormat::Jpeg, height, width)?,
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
fn multipart_field(content_type: &str, body: &[u8], limit: usize) -> Result<(Option<String>, bytes::Bytes), InputError> {
    let error = |e: multer::Error| match e {
        multer::Error::StreamSizeExceeded { limit } | multer::Error::FieldSizeExceeded { limit, .. } => {
            InputError::TooLarge { bytes: body.len(), limit: limit as usize }
        }
        e => InputError::Garbled { format: "multipart/form-data", detail: e.to_string() },
    };
    let boundary = multer::parse_boundary(content_type).map_err(error)?;
    let data = bytes::Bytes::copy_from_slice(body);
    let stream = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(data) });
    // The caller already bounds the body; multer buffers a whole field in memory, so it gets the
    // same bound itself rather than relying on every caller.
    let size = multer::SizeLimit::new().whole_stream(limit as u64).per_field(limit as u64);
    let mut form = multer::Multipart::with_constraints(stream, boundary, multer::Constraints::new().size_limit(size));
    // The body is already in memory, so every future here completes without waiting.
    futures::executor::block_on(async {
        while let Some(field) = form.next_field().await.map_err(error)? {
            if field.name() == Some("upload_file") {
                let ct = field.content_type().map(|m| m.essence_str().to_ascii_lowercase());
                let bytes = field.bytes().await.map_err(error)?;
                return Ok((ct, bytes));
            }
        }
        Err(InputError::MissingField)
    })
}

/// Largest `.npy` header accepted: numpy writes ~128 bytes; a v2/v3 header may declare up to 4 GB,
/// which would be allocated before parsing.
const MAX_NPY_HEADER: usize = 64 * 1024;

/// Values reserved up front; 1000 images of 28×28 fit.
const MAX_PREALLOCATED_VALUES: usize = 1 << 20;

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
    // Saturating: a huge configured `max_images` must not overflow into a small limit (or panic).
    let max_member = limits.max_images.saturating_mul(height * width * 8).saturating_add(MAX_NPY_HEADER);
    let declared = usize::try_from(member.size()).unwrap_or(usize::MAX);
    if declared > max_member {
        return Err(InputError::TooLarge { bytes: declared, limit: max_member });
    }
    // Counts what actually inflates, whatever the zip says.
    let mut reader = member.take((max_member as u64).saturating_add(1));
    let header = read_npy_header(&mut reader)?;
    let dtype = NpyDtype::parse(&header.type_descriptor.to_string())?;
    let count = image_count(&header.shape, height, width, limits)?;
    let values = count.checked_mul(height * width).ok_or(InputError::TooManyImages { count, limit: limits.max_images })?;
    // Grows with the data actually read, so a header promising more than the stream holds
    // allocates only what arrives.
    let mut pixels = Vec::with_capacity(values.min(MAX_PREALLOCATED_VALUES));
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

/// Most levels of nested arrays a JSON upload may have: (N, 1, H, W).
const MAX_JSON_DEPTH: usize = 4;

/// Nested JSON pixel arrays, parsed as they stream past: no `serde_json::Value` tree (dozens of
/// bytes per number), at most [`MAX_JSON_DEPTH`] levels, and at most `max_images` images' worth
/// of values kept, so a body within the size limit allocates little more than the pixels it may
/// legitimately hold.
fn decode_json(body: &[u8], height: usize, width: usize, limits: &Limits) -> Result<Images, InputError> {
    use serde::de::DeserializeSeed;
    let cap = limits.max_images.saturating_mul(height * width);
    let mut state = JsonPixels {
        kinds: [None; MAX_JSON_DEPTH + 1],
        shape: [None; MAX_JSON_DEPTH + 1],
        values: Vec::new(),
        cap,
        seen: 0,
        is_int: true,
        in_object: false,
        error: None,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = JsonLevel { state: &mut state, level: 0 }.deserialize(&mut de).and_then(|()| de.end());
    if let Err(e) = parsed {
        return Err(state.error.take().unwrap_or(InputError::Garbled { format: "JSON", detail: e.to_string() }));
    }
    let shape: Vec<usize> = (0..MAX_JSON_DEPTH)
        .take_while(|&l| state.kinds[l] == Some(JsonKind::Array))
        .map(|l| state.shape[l].unwrap_or(0))
        .collect();
    if shape.len() < 2 {
        return Err(InputError::WrongShape { got: format!("nested arrays of depth {} ({shape:?})", shape.len()) });
    }
    let count = image_count(&shape, height, width, limits)?;
    // Every value was kept once the shape is within limits (rows are checked to be equal).
    debug_assert_eq!(state.values.len(), state.seen);
    if state.is_int && state.values.iter().any(|&v| !(0.0..=255.0).contains(&v)) {
        return Err(InputError::OutOfRange("integers must be 0–255".into()));
    }
    finish_pixels(state.values, !state.is_int, count, height, width)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum JsonKind {
    Array,
    Number,
}

struct JsonPixels {
    /// What was found at each nesting level; one level cannot hold both arrays and numbers.
    kinds: [Option<JsonKind>; MAX_JSON_DEPTH + 1],
    /// The length of the first array that ended at each level; every other must match.
    shape: [Option<usize>; MAX_JSON_DEPTH + 1],
    values: Vec<f32>,
    /// Values beyond this are counted (for the error) but not kept.
    cap: usize,
    seen: usize,
    is_int: bool,
    /// Inside `{"images": ...}` already: a second object is not a pixel array.
    in_object: bool,
    /// Why parsing stopped when the JSON was valid but not pixels (serde only carries text).
    error: Option<InputError>,
}

impl JsonPixels {
    fn fail<E: serde::de::Error>(&mut self, error: InputError) -> E {
        let e = E::custom(&error);
        self.error = Some(error);
        e
    }

    fn wrong_shape<E: serde::de::Error>(&mut self, got: String) -> E {
        self.fail(InputError::WrongShape { got })
    }

    fn kind<E: serde::de::Error>(&mut self, level: usize, kind: JsonKind) -> Result<(), E> {
        match self.kinds[level] {
            Some(k) if k != kind => Err(self.wrong_shape(format!("ragged arrays: numbers and arrays mixed at depth {level}"))),
            _ => {
                self.kinds[level] = Some(kind);
                Ok(())
            }
        }
    }

    fn number<E: serde::de::Error>(&mut self, level: usize, value: f32, int: bool) -> Result<(), E> {
        self.kind(level, JsonKind::Number)?;
        self.is_int &= int;
        self.seen += 1;
        if self.values.len() < self.cap {
            self.values.push(value);
        }
        Ok(())
    }
}

/// Visits the value at one nesting level.
struct JsonLevel<'a> {
    state: &'a mut JsonPixels,
    level: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for JsonLevel<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for JsonLevel<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("nested arrays of pixel values")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.state.number(self.level, v as f32, true)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.state.number(self.level, v as f32, true)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.state.number(self.level, v as f32, false)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        let shown: String = v.chars().take(20).collect();
        Err(self.state.wrong_shape(format!("expected a number or an array, found the string {shown:?}")))
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        Err(self.state.wrong_shape(format!("expected a number or an array, found {v}")))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Err(self.state.wrong_shape("expected a number or an array, found null".into()))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let level = self.level;
        if level >= MAX_JSON_DEPTH {
            // Refused on entry: no deeper recursion, whatever the body holds.
            return Err(self.state.wrong_shape(format!("arrays nested deeper than {MAX_JSON_DEPTH} levels")));
        }
        self.state.kind(level, JsonKind::Array)?;
        let mut len = 0usize;
        while seq.next_element_seed(JsonLevel { state: &mut *self.state, level: level + 1 })?.is_some() {
            len += 1;
        }
        match self.state.shape[level] {
            None => self.state.shape[level] = Some(len),
            Some(n) if n != len => {
                return Err(self.state.wrong_shape(format!("ragged arrays: a row of {len} where {n} was expected")));
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// `{"images": [...]}`, once, at the top; other keys are skipped without being stored.
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.level != 0 || self.state.in_object {
            return Err(self.state.wrong_shape("expected a number or an array, found an object".into()));
        }
        self.state.in_object = true;
        let mut found = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "images" && !found {
                map.next_value_seed(JsonLevel { state: &mut *self.state, level: 0 })?;
                found = true;
            } else if key == "images" {
                let error = InputError::Garbled { format: "JSON", detail: "the key 'images' appears twice".into() };
                return Err(self.state.fail(error));
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        if !found {
            let error = InputError::Garbled { format: "JSON", detail: "object without an 'images' key".into() };
            return Err(self.state.fail(error));
        }
        Ok(())
    }
}

/// Pictures wider or taller than this are refused from their header. The models see 28×28; a
/// photographed character needs far less, and 4096 still admits most phone photos' sides.
pub const MAX_PICTURE_SIDE: u32 = 4096;

/// What decoding one picture may allocate, estimated from its header before any pixel buffer
/// exists (see [`picture_decode_bytes`]): the default instance memory budget is sized for
/// predict's ~120 MiB peak, and a picture should not double it.
pub const MAX_PICTURE_DECODE_BYTES: u64 = 64 << 20;

/// The bytes a picture's decode allocates at most: its decoded pixels, plus for JPEG the whole-image
/// coefficients (2 bytes per sample) zune-jpeg keeps while decoding a progressive file.
pub fn picture_decode_bytes(format: image::ImageFormat, color: image::ColorType, width: u32, height: u32) -> u64 {
    let pixels = u64::from(width) * u64::from(height);
    let coefficients = if format == image::ImageFormat::Jpeg { 2 * u64::from(color.channel_count()) } else { 0 };
    pixels * (u64::from(color.bytes_per_pixel()) + coefficients)
}

/// PNG/JPEG → grayscale, composited on white, light backgrounds inverted, fitted to
/// `height`×`width` keeping the aspect ratio (padding with background). The size is checked on
/// the header; the pixels are then decoded once, into the decoder's own buffer.
fn decode_picture(body: &[u8], format: image::ImageFormat, height: usize, width: usize) -> Result<Images, InputError> {
    let name = if format == image::ImageFormat::Png { "PNG" } else { "JPEG" };
    let error = |e: image::ImageError| match e {
        image::ImageError::Limits(e) => InputError::PictureTooLarge(format!("{name}: {e}")),
        e => InputError::Garbled { format: name, detail: e.to_string() },
    };
    let mut reader = image::ImageReader::with_format(Cursor::new(body), format);
    // Dimensions are checked below, with a clearer error; this caps the PNG decoder's own buffers
    // (text and ICC chunks) too.
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_PICTURE_DECODE_BYTES);
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(error)?;
    let (w, h) = decoder.dimensions();
    let needed = picture_decode_bytes(format, decoder.color_type(), w, h);
    if w > MAX_PICTURE_SIDE || h > MAX_PICTURE_SIDE || needed > MAX_PICTURE_DECODE_BYTES {
        return Err(InputError::PictureTooLarge(format!(
            "a {w}×{h} {name} ({:?}) needs about {} MiB to decode",
            decoder.color_type(),
            needed.div_ceil(1 << 20)
        )));
    }
    if w == 0 || h == 0 {
        return Err(InputError::Garbled { format: name, detail: format!("the picture is {w}×{h}") });
    }
    let mut plain = gray_on_white(image::DynamicImage::from_decoder(decoder).map_err(error)?);
    // Datasets have light strokes on black: invert pictures whose border (the paper) is light.
    if border_mean(&plain) > 127.0 {
        image::imageops::invert(&mut plain);
    }
    let scale = (width as f32 / w as f32).min(height as f32 / h as f32);
    let (nw, nh) = (((w as f32 * scale).round() as u32).clamp(1, width as u32), ((h as f32 * scale).round() as u32).clamp(1, height as u32));
    let resized = image::imageops::resize(&plain, nw, nh, image::imageops::FilterType::Triangle);
    drop(plain);
    let mut canvas = image::GrayImage::new(width as u32, height as u32);
    image::imageops::overlay(&mut canvas, &resized, ((width as u32 - nw) / 2) as i64, ((height as u32 - nh) / 2) as i64);
    Ok(Images { count: 1, height, width, pixels: canvas.into_raw().into_iter().map(f32::from).collect() })
}

/// Grayscale with transparent pixels as white paper. A gray picture keeps its decoded buffer;
/// others are converted once and composited in place.
fn gray_on_white(picture: image::DynamicImage) -> image::GrayImage {
    let (w, h) = (picture.width(), picture.height());
    let gray_alpha = match picture {
        image::DynamicImage::ImageLuma8(gray) => return gray,
        image::DynamicImage::ImageLumaA8(gray_alpha) => gray_alpha,
        // `other` (the decoded colour buffer) is freed at the end of this arm.
        other => other.to_luma_alpha8(),
    };
    let mut raw = gray_alpha.into_raw();
    for i in 0..raw.len() / 2 {
        // Pixel i moves from bytes 2i, 2i+1 to byte i: never over a pixel not yet read.
        let (l, a) = (raw[2 * i] as f32, raw[2 * i + 1] as f32 / 255.0);
        raw[i] = (l * a + 255.0 * (1.0 - a)).round() as u8;
    }
    raw.truncate(raw.len() / 2);
    image::GrayImage::from_raw(w, h, raw).expect("one byte per pixel")
}

/// Mean of the outermost rows and columns (each pixel once); `picture` is at least 1×1.
fn border_mean(picture: &image::GrayImage) -> f32 {
    let (w, h) = picture.dimensions();
    let rows = if h > 1 { vec![0, h - 1] } else { vec![0] };
    let columns = if w > 1 { vec![0, w - 1] } else { vec![0] };
    let whole_rows = rows.iter().flat_map(|&y| (0..w).map(move |x| (x, y)));
    let row_ends = (1..h - 1).flat_map(|y| columns.iter().map(move |&x| (x, y)));
    let sum: f32 = whole_rows.chain(row_ends).map(|(x, y)| picture.get_pixel(x, y).0[0] as f32).sum();
    sum / (rows.len() as u32 * w + h.saturating_sub(2) * columns.len() as u32) as f32
}
