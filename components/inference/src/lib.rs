//! kana-inference: everything between an uploaded file and a list of predictions.
//!
//! Used by every Spin component (wasm32-wasip2), by the trainer's export parity tests and by the
//! benches, so decoding and preprocessing exist exactly once.

pub mod card;
