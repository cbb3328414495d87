//! The same graph as NNEF (tract-nnef's `.nnef.tgz`): the ONNX export loaded by tract, decluttered
//! (not optimised: optimised ops are tract-internal) and written as a deterministic tar.gz.

use anyhow::Result;
use tract_onnx::WithOnnx;
use tract_onnx::prelude::*;

/// ONNX bytes (from [`super::onnx::to_onnx_bytes`]) → NNEF `.nnef.tgz` bytes, batch still "N".
pub fn onnx_to_nnef_tgz(onnx: &[u8], input: [usize; 3]) -> Result<Vec<u8>> {
    let model = super::typed_model(onnx, input)?.into_decluttered()?;
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let gz = tract_nnef::nnef().with_onnx().write_to_tar_with_config(&model, gz, false, true)?;
    Ok(gz.finish()?)
}

/// Loads an `.nnef.tgz` the way the inference side does, as a runnable plan.
pub fn load_nnef_tgz(bytes: &[u8]) -> Result<std::sync::Arc<TypedRunnableModel>> {
    let model = tract_nnef::nnef().with_onnx().model_for_read(&mut std::io::Cursor::new(bytes))?;
    Ok(model.into_optimized()?.into_runnable()?)
}
