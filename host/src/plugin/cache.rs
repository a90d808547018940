//! On-disk cache of compiled components, so a restart deserialises native
//! code in about a millisecond instead of recompiling for hundreds.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Environment variable naming the cache directory.
pub const CACHE_DIR_ENV: &str = "SLUICE_CACHE_DIR";
/// Set to `0` to compile every time (benchmarks, debugging).
pub const CACHE_ENABLE_ENV: &str = "SLUICE_COMPILE_CACHE";

/// Where compiled components are kept, unless disabled.
pub fn default_cache_dir() -> Option<PathBuf> {
    if std::env::var(CACHE_ENABLE_ENV).is_ok_and(|v| v == "0") {
        return None;
    }
    if let Some(dir) = std::env::var_os(CACHE_DIR_ENV) {
        return Some(PathBuf::from(dir));
    }
    dirs::cache_dir().map(|d| d.join("sluice").join("components"))
}

/// Load `wasm` as a component, from the cache when a compatible compiled
/// copy exists. The key covers the wasm bytes (`wasm_sha256`, hex, when the
/// caller already knows it) and the engine's compatibility hash (wasmtime
/// version and settings), so a stale entry is never used. Cache trouble is
/// logged and ignored: it only costs time.
pub fn load(engine: &Engine, wasm: &[u8], wasm_sha256: Option<&str>, dir: Option<&Path>) -> wasmtime::Result<Component> {
    let Some(dir) = dir else { return Component::new(engine, wasm) };
    let digest = match wasm_sha256 {
        Some(known) => known.to_string(),
        None => hex::encode(Sha256::digest(wasm)),
    };
    let path = dir.join(format!("{}.cwasm", cache_key(engine, &digest)));
    if path.exists() {
        // SAFETY: the file was written by `Component::serialize` of this
        // engine configuration (the key says so) into a directory owned by
        // this user; wasmtime also checks its header before use.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => return Ok(c),
            Err(e) => tracing::warn!("ignoring unusable compiled-plugin cache {}: {e}", path.display()),
        }
    }
    let component = Component::new(engine, wasm)?;
    if let Err(e) = store(&component, dir, &path) {
        tracing::debug!("could not cache compiled plugin at {}: {e}", path.display());
    }
    Ok(component)
}

fn store(component: &Component, dir: &Path, path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = component.serialize()?;
    // A unique temp file: two loads of one plugin may race to cache it.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &bytes)?;
    tmp.persist(path)?;
    Ok(())
}

fn cache_key(engine: &Engine, wasm_sha256: &str) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let digest = Sha256::new().chain_update(wasm_sha256.as_bytes()).chain_update(hasher.finish().to_le_bytes()).finalize();
    hex::encode(&digest[..16])
}
