//! kana-inference: everything between an uploaded file and a list of predictions.
//!
//! Used by every Spin component (wasm32-wasip2), by the trainer's export (feature `export`: the
//! ONNX writer and NNEF conversion) and by the benches, so decoding, preprocessing and the model
//! files' format exist exactly once.
//!
//! Flow: [`Registry::open_dir`] validates every card (each model's tract plan is built on its
//! first request; [`Registry::load_dir`] builds them all at once, for tools and tests);
//! [`predict_request`] turns request bytes (any accepted format) into the `/predict` JSON, by
//! [`decode_input`] → [`predict_images`] → [`predict_response`], the steps a job runner takes
//! slice by slice;
//! [`InputError::status`] / [`PredictError::body`] give the HTTP error for bad input.

pub mod api;
pub mod card;
pub mod decode;
pub mod error;
#[cfg(feature = "export")]
pub mod export;
pub mod model;
pub mod registry;
pub mod sheet;
pub mod task_id;
#[cfg(feature = "testing")]
pub mod testing;

pub use api::{ModelInfo, PredictAnswer, PredictOptions, PredictResponse, PredictionResult, ResponseFormat, answer_predict, decode_input, parse_format, parse_top_k, predict_images, predict_request, predict_response, predict_sheet};
pub use card::ModelCard;
pub use decode::{Images, Limits, decode_upload};
pub use error::{ErrorBody, InputError, PredictError};
pub use model::{Model, Prediction, WeightsFormat};
pub use registry::{CardError, Registry};
pub use sheet::{Sheet, contact_sheet};

/// Writes one line to stderr in a single write. `eprintln!` writes each formatted piece
/// separately (stderr is unbuffered), so a host's own log lines could land mid-line.
pub fn log_line(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}
