//! Errors a client can cause, each with the HTTP status it maps to and a JSON body saying what was
//! expected. Every component maps them the same way, so `/predict`, `/async_predict` and the batch
//! jobs answer bad input identically.

use serde::Serialize;

/// A request the server cannot serve because of what the client sent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    #[error("unknown model '{0}'")]
    UnknownModel(String),
    #[error("the upload is empty")]
    Empty,
    #[error("unsupported content type '{0}'")]
    UnsupportedType(String),
    #[error("multipart form has no 'upload_file' field")]
    MissingField,
    #[error("malformed {format}: {detail}")]
    Garbled { format: &'static str, detail: String },
    #[error("unsupported element type {0}")]
    WrongDtype(String),
    #[error("wrong shape {got}")]
    WrongShape { got: String },
    #[error("pixel values out of range: {0}")]
    OutOfRange(String),
    #[error("{count} images exceed the limit of {limit} per request")]
    TooManyImages { count: usize, limit: usize },
    #[error("body of {bytes} bytes exceeds the limit of {limit} bytes")]
    TooLarge { bytes: usize, limit: usize },
    /// Refused from the picture's header, before any pixel is decoded.
    #[error("picture too large: {0}")]
    PictureTooLarge(String),
    #[error("bad query parameter: {0}")]
    BadQuery(String),
}

/// What each kind of input is expected to look like; sent with every error so a client can fix it.
pub const EXPECTED_UPLOAD: &str = "multipart/form-data with field 'upload_file', or a raw body with \
    Content-Type application/x-npz (key 'arr_0' or a single array; uint8 0-255 or float 0-1; shape \
    (H,W), (N,H,W) or (N,1,H,W)), image/png, image/jpeg, or application/json (nested pixel arrays \
    of the same shapes, or {\"images\": ...})";

/// JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// Machine-readable kind, e.g. "unknown_model", "wrong_shape".
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
}

impl InputError {
    /// HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            InputError::UnknownModel(_) => 404,
            InputError::UnsupportedType(_) => 415,
            InputError::TooManyImages { .. } | InputError::TooLarge { .. } | InputError::PictureTooLarge(_) => 413,
            InputError::BadQuery(_) => 400,
            InputError::Empty
            | InputError::MissingField
            | InputError::Garbled { .. }
            | InputError::WrongDtype(_)
            | InputError::WrongShape { .. }
            | InputError::OutOfRange(_) => 422,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            InputError::UnknownModel(_) => "unknown_model",
            InputError::Empty => "empty_body",
            InputError::UnsupportedType(_) => "unsupported_media_type",
            InputError::MissingField => "missing_field",
            InputError::Garbled { .. } => "malformed_input",
            InputError::WrongDtype(_) => "wrong_dtype",
            InputError::WrongShape { .. } => "wrong_shape",
            InputError::OutOfRange(_) => "out_of_range",
            InputError::TooManyImages { .. } => "too_many_images",
            InputError::TooLarge { .. } => "body_too_large",
            InputError::PictureTooLarge(_) => "picture_too_large",
            InputError::BadQuery(_) => "bad_query",
        }
    }

    /// The JSON body; `expected` tells the client what would have been accepted.
    pub fn body(&self) -> ErrorBody {
        let expected = match self {
            InputError::UnknownModel(_) => Some("a model name listed by GET /models".to_string()),
            InputError::TooManyImages { limit, .. } => Some(format!("at most {limit} images")),
            InputError::TooLarge { limit, .. } => Some(format!("at most {limit} bytes")),
            InputError::PictureTooLarge(_) => Some(format!(
                "a PNG or JPEG of at most {side}×{side} pixels that decodes into at most {mib} MiB",
                side = crate::decode::MAX_PICTURE_SIDE,
                mib = crate::decode::MAX_PICTURE_DECODE_BYTES >> 20
            )),
            InputError::BadQuery(_) => Some("top_k: an integer from 1 to the number of classes; format: json or png".into()),
            _ => Some(EXPECTED_UPLOAD.to_string()),
        };
        ErrorBody { error: self.to_string(), kind: self.kind().to_string(), expected }
    }
}

/// A failure that is the server's fault (model broke at run time): HTTP 500.
#[derive(Debug, thiserror::Error)]
#[error("inference failed: {0}")]
pub struct InferenceError(pub String);

/// Anything `predict_request` can return.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Inference(#[from] InferenceError),
}

impl PredictError {
    pub fn status(&self) -> u16 {
        match self {
            PredictError::Input(e) => e.status(),
            PredictError::Inference(_) => 500,
        }
    }

    pub fn body(&self) -> ErrorBody {
        match self {
            PredictError::Input(e) => e.body(),
            PredictError::Inference(e) => {
                ErrorBody { error: e.to_string(), kind: "inference_failed".into(), expected: None }
            }
        }
    }
}
