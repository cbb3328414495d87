//! The wasmtime `Engine` and `Linker` every component shares, and compilation with an on-disk
//! cache: `<state-dir>/cache/<sha256 of the wasm>-<engine fingerprint>.cwasm`, so a restart with
//! unchanged components skips Cranelift (seconds for a tract component) and only deserialises.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store};

use crate::state::HostState;

/// The engine, with epoch interruption on and its ticker started (see `limits`).
pub fn new_engine() -> Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model_async(true);
    config.epoch_interruption(true);
    let engine = Engine::new(&config)?;
    crate::limits::start_epoch_ticker(&engine);
    Ok(engine)
}

/// A store for one instance: its memory limiter installed, and running wasm yielding to the
/// async runtime at every epoch tick, so request deadlines and client disconnects are noticed
/// while a guest computes (the caller then drops the store, which stops the guest).
pub fn new_store(engine: &Engine, state: HostState) -> Store<HostState> {
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.memory);
    store.epoch_deadline_async_yield_and_update(1);
    store
}

/// A linker with WASI (0.2 and 0.3), wasi:http 0.3 types and the Spin interfaces.
pub fn new_linker(engine: &Engine) -> Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    crate::key_value::add_to_linker(&mut linker)?;
    crate::variables::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// Whether a component came from the compile cache, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compiled {
    FromCache,
    Fresh,
}

/// Loads `wasm_path`, reusing a cached compilation when one matches.
pub fn load_component(engine: &Engine, wasm_path: &Path, cache_dir: &Path) -> Result<(Component, Compiled)> {
    let wasm = std::fs::read(wasm_path).with_context(|| {
        format!("cannot read component {} (run `cargo xtask build-components`)", wasm_path.display())
    })?;
    let cached = cache_dir.join(format!("{}-{}.cwasm", hex::encode(Sha256::digest(&wasm)), engine_fingerprint(engine)));
    if cached.is_file() {
        // SAFETY: the file was written by `Component::serialize` of this very engine
        // configuration (the name carries its fingerprint) into our private state dir; wasmtime
        // also checks the version and configuration header and errors on a mismatch.
        match unsafe { Component::deserialize_file(engine, &cached) } {
            Ok(component) => return Ok((component, Compiled::FromCache)),
            Err(e) => tracing::warn!("ignoring unusable compile cache {}: {e}", cached.display()),
        }
    }
    let component = Component::new(engine, &wasm)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot compile {}", wasm_path.display()))?;
    if let Err(e) = write_cache(&component, cache_dir, &cached) {
        tracing::warn!("cannot write compile cache {}: {e:#}", cached.display());
    }
    Ok((component, Compiled::Fresh))
}

/// Identifies wasmtime's version and the engine settings that affect compiled code.
fn engine_fingerprint(engine: &Engine) -> String {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

fn write_cache(component: &Component, cache_dir: &Path, target: &Path) -> Result<()> {
    std::fs::create_dir_all(cache_dir)?;
    let bytes = component.serialize()?;
    // Write-then-rename so a concurrent or interrupted start never reads half a file.
    let partial = target.with_extension(format!("partial-{}", std::process::id()));
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, target)?;
    Ok(())
}
