//! The wasmtime `Engine` and `Linker` every component shares, and compilation with an on-disk
//! cache: `<state-dir>/cache/<sha256 of the wasm>-<engine fingerprint>.cwasm`, so a restart with
//! unchanged components skips Cranelift (seconds for a tract component) and only deserialises.
//! The wasm's sha256 is itself remembered per file (size + modification time), because reading
//! and hashing three ~20 MB tract components was most of a cached start.

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
    let read_wasm = || {
        std::fs::read(wasm_path).with_context(|| {
            format!("cannot read component {} (run `cargo xtask build-components`)", wasm_path.display())
        })
    };
    let stamp = FileStamp::of(wasm_path);
    let (digest, wasm) = match stamp.as_ref().and_then(|stamp| stamp.remembered_digest(cache_dir)) {
        Some(digest) => (digest, None),
        None => {
            let wasm = read_wasm()?;
            let digest = hex::encode(Sha256::digest(&wasm));
            if let Some(stamp) = &stamp {
                stamp.remember_digest(cache_dir, &digest);
            }
            (digest, Some(wasm))
        }
    };
    let cached = cache_dir.join(format!("{digest}-{}.cwasm", engine_fingerprint(engine)));
    if cached.is_file() {
        // SAFETY: the file was written by `Component::serialize` of this very engine
        // configuration (the name carries its fingerprint) into our private state dir; wasmtime
        // also checks the version and configuration header and errors on a mismatch.
        match unsafe { Component::deserialize_file(engine, &cached) } {
            Ok(component) => return Ok((component, Compiled::FromCache)),
            Err(e) => tracing::warn!("ignoring unusable compile cache {}: {e}", cached.display()),
        }
    }
    let wasm = match wasm {
        Some(wasm) => wasm,
        None => read_wasm()?,
    };
    let component = Component::new(engine, &wasm)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot compile {}", wasm_path.display()))?;
    if let Err(e) = write_cache(&component, cache_dir, &cached) {
        tracing::warn!("cannot write compile cache {}: {e:#}", cached.display());
    }
    Ok((component, Compiled::Fresh))
}

/// What identifies a component file's content without reading it: its canonical path, size and
/// modification time (as make and cargo trust them). A rebuilt component changes size or mtime;
/// only a same-size rewrite within the same nanosecond would be missed.
struct FileStamp {
    path: std::path::PathBuf,
    len: u64,
    modified_ns: u128,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        let path = std::fs::canonicalize(path).ok()?;
        let meta = std::fs::metadata(&path).ok()?;
        let modified_ns = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos();
        Some(FileStamp { path, len: meta.len(), modified_ns })
    }

    /// `<cache>/<sha256 of the path>.digest` holds `<len> <mtime ns> <sha256 of the content>`.
    fn record_path(&self, cache_dir: &Path) -> std::path::PathBuf {
        let key = hex::encode(Sha256::digest(self.path.as_os_str().as_encoded_bytes()));
        cache_dir.join(format!("{key}.digest"))
    }

    fn remembered_digest(&self, cache_dir: &Path) -> Option<String> {
        let text = std::fs::read_to_string(self.record_path(cache_dir)).ok()?;
        let mut words = text.split_whitespace();
        let (len, modified_ns, digest): (u64, u128, &str) = (words.next()?.parse().ok()?, words.next()?.parse().ok()?, words.next()?);
        let valid = len == self.len && modified_ns == self.modified_ns && digest.len() == 64;
        (valid && digest.bytes().all(|b| b.is_ascii_hexdigit())).then(|| digest.to_owned())
    }

    /// Best effort: without the record the next start just hashes again.
    fn remember_digest(&self, cache_dir: &Path, digest: &str) {
        let target = self.record_path(cache_dir);
        let partial = target.with_extension(format!("partial-{}", std::process::id()));
        let written = std::fs::create_dir_all(cache_dir)
            .and_then(|()| std::fs::write(&partial, format!("{} {} {digest}\n", self.len, self.modified_ns)))
            .and_then(|()| std::fs::rename(&partial, &target));
        if let Err(e) = written {
            tracing::debug!("cannot remember the digest of {}: {e}", self.path.display());
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("kana-engine-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn records(cache: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(cache)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".digest"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_remembered_digest_finds_the_cached_compilation_without_hashing_again() {
        let dir = scratch("remember");
        let (wasm, cache) = (dir.join("app.wasm"), dir.join("cache"));
        std::fs::write(&wasm, "(component)").unwrap();
        let engine = Engine::default();
        assert_eq!(load_component(&engine, &wasm, &cache).unwrap().1, Compiled::Fresh);
        assert_eq!(records(&cache).len(), 1);
        assert_eq!(load_component(&engine, &wasm, &cache).unwrap().1, Compiled::FromCache);

        // The record is what names the cache entry: a forged digest points at no compilation,
        // so the component is compiled again (and still loads).
        let record = cache.join(&records(&cache)[0]);
        let text = std::fs::read_to_string(&record).unwrap();
        let forged: String = text.split_whitespace().take(2).chain(std::iter::once(&*"0".repeat(64))).collect::<Vec<_>>().join(" ");
        std::fs::write(&record, forged).unwrap();
        assert_eq!(load_component(&engine, &wasm, &cache).unwrap().1, Compiled::Fresh);

        // A rebuilt component (new size and time) is hashed afresh, not served from the old entry.
        std::fs::write(&wasm, "(component (core module))").unwrap();
        assert_eq!(load_component(&engine, &wasm, &cache).unwrap().1, Compiled::Fresh);
        assert_eq!(load_component(&engine, &wasm, &cache).unwrap().1, Compiled::FromCache);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_garbled_record_is_ignored() {
        let dir = scratch("garbled");
        let (wasm, cache) = (dir.join("app.wasm"), dir.join("cache"));
        std::fs::write(&wasm, "(component)").unwrap();
        let engine = Engine::default();
        load_component(&engine, &wasm, &cache).unwrap();
        let record = cache.join(&records(&cache)[0]);
        for garbage in ["", "12", "x y z", "11 1 not-hex-not-hex-not-hex-not-hex-not-hex-not-hex-not-hex-not-he"] {
            std::fs::write(&record, garbage).unwrap();
            let stamp = FileStamp::of(&wasm).unwrap();
            assert_eq!(stamp.remembered_digest(&cache), None, "{garbage:?}");
            // Loading still works and rewrites a good record.
            assert_eq!(load_component(&engine, &wasm, &cache).unwrap().1, Compiled::FromCache);
            assert!(stamp.remembered_digest(&cache).is_some());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
