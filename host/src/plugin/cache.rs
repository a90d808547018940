//! On-disk cache of compiled components, so a restart deserialises native
//! code in about a millisecond instead of recompiling for hundreds.
//!
//! Deserialising maps the file's native code into the process, so an entry
//! is used only while the directory and the file belong to this user and
//! no one else can write them (`SLUICE_CACHE_DIR` may name any directory).
//! Otherwise plugins are compiled, as with no cache.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
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

/// A directory of compiled components.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    /// The directory was refused and a warning said why: once is enough.
    warned: AtomicBool,
}

impl Cache {
    pub fn new(dir: PathBuf) -> Cache {
        Cache { dir, warned: AtomicBool::new(false) }
    }

    /// The directory, created (mode 0700) if missing, when it is safe to
    /// keep native code in; `None` (and one warning) when it is not.
    fn usable_dir(&self) -> Option<&Path> {
        if let Err(e) = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir) {
            tracing::debug!("no compiled-plugin cache: cannot create {}: {e}", self.dir.display());
            return None;
        }
        let checked = match std::fs::metadata(&self.dir) {
            Ok(meta) if !meta.is_dir() => Err("it is not a directory".to_string()),
            Ok(meta) => private(&meta),
            Err(e) => Err(e.to_string()),
        };
        match checked {
            Ok(()) => Some(&self.dir),
            Err(why) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "not using the compiled-plugin cache {}: {why}; plugins are compiled on every start instead",
                        self.dir.display()
                    );
                }
                None
            }
        }
    }
}

/// Load `wasm` as a component, from the cache when a compatible compiled
/// copy exists. The key covers the wasm bytes (`wasm_sha256`, hex, when the
/// caller already knows it) and the engine's compatibility hash (wasmtime
/// version and settings), so a stale entry is never used. Cache trouble is
/// logged and ignored: it only costs time.
pub fn load(
    engine: &Engine,
    wasm: &[u8],
    wasm_sha256: Option<&str>,
    cache: Option<&Cache>,
) -> wasmtime::Result<Component> {
    let Some(dir) = cache.and_then(Cache::usable_dir) else { return Component::new(engine, wasm) };
    let digest = match wasm_sha256 {
        Some(known) => known.to_string(),
        None => hex::encode(Sha256::digest(wasm)),
    };
    let path = dir.join(format!("{}.cwasm", cache_key(engine, &digest)));
    match trusted_entry(&path) {
        Ok(false) => {}
        Ok(true) => {
            // SAFETY: the file was written by `Component::serialize` of this
            // engine configuration (the key says so), and it and its
            // directory belong to this user and are writable by no one else
            // (checked just above), so only this user could have put other
            // code there; wasmtime also checks its header before use.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok(c),
                Err(e) => tracing::warn!("ignoring unusable compiled-plugin cache {}: {e}", path.display()),
            }
        }
        // Compiling stores a new entry in its place.
        Err(why) => tracing::warn!("ignoring compiled-plugin cache {}: {why}", path.display()),
    }
    let component = Component::new(engine, wasm)?;
    if let Err(e) = store(&component, dir, &path) {
        tracing::debug!("could not cache compiled plugin at {}: {e}", path.display());
    }
    Ok(component)
}

/// Whether a cache entry exists and may be trusted; the reason when it
/// exists but may not. A symbolic link is not followed.
fn trusted_entry(path: &Path) -> Result<bool, String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e.to_string()),
    };
    if !meta.file_type().is_file() {
        return Err("it is not a regular file".into());
    }
    private(&meta).map(|()| true)
}

/// Why a file or directory is not this user's alone, if it is not: it must
/// belong to the effective user and be writable by neither group nor others.
fn private(meta: &std::fs::Metadata) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(format!("it belongs to uid {}, not to this user (uid {me})", meta.uid()));
    }
    let mode = meta.mode() & 0o7777;
    let writers = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (false, false) => return Ok(()),
        (true, false) => "its group",
        (false, true) => "others",
        (true, true) => "its group and others",
    };
    Err(format!("it is writable by {writers} (mode {mode:o})"))
}

fn store(component: &Component, dir: &Path, path: &Path) -> anyhow::Result<()> {
    let bytes = component.serialize()?;
    // A unique temp file (mode 0600): two loads of one plugin may race to
    // cache it.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &bytes)?;
    tmp.persist(path)?;
    Ok(())
}

fn cache_key(engine: &Engine, wasm_sha256: &str) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let digest =
        Sha256::new().chain_update(wasm_sha256.as_bytes()).chain_update(hasher.finish().to_le_bytes()).finalize();
    hex::encode(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o7777
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Hand `path` to `nobody`; false when this process may not (not root).
    fn give_away(path: &Path) -> bool {
        match std::os::unix::fs::chown(path, Some(65534), Some(65534)) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                eprintln!("not root: skipping the part of the test about another user's files");
                false
            }
            Err(e) => panic!("chown {}: {e}", path.display()),
        }
    }

    fn warnings(log: &str) -> usize {
        log.lines().filter(|l| l.contains("WARN")).count()
    }

    /// The normal case: the directory is created private, an entry is
    /// written private and used by the next load; an entry others could
    /// have written is compiled over instead.
    #[test]
    fn a_private_directory_is_created_and_used() {
        let scratch = tempfile::tempdir().unwrap();
        let cache = Cache::new(scratch.path().join("sluice").join("components"));
        let engine = Engine::default();
        let wasm = super::super::bundled::bytes("file").unwrap();
        let (loaded, log) = crate::logging::capture(|| load(&engine, wasm, None, Some(&cache)));
        loaded.unwrap();
        assert_eq!(warnings(&log), 0, "{log}");
        assert_eq!((mode(&cache.dir), mode(cache.dir.parent().unwrap())), (0o700, 0o700));
        let entries: Vec<PathBuf> = std::fs::read_dir(&cache.dir).unwrap().map(|e| e.unwrap().path()).collect();
        let [entry] = &entries[..] else { panic!("one entry expected: {entries:?}") };
        assert_eq!(mode(entry), 0o600);
        // The next load deserialises the entry: one that is not a compiled
        // component shows it by failing to.
        let good = std::fs::read(entry).unwrap();
        std::fs::write(entry, b"not a compiled component").unwrap();
        let (loaded, log) = crate::logging::capture(|| load(&engine, wasm, None, Some(&cache)));
        loaded.unwrap();
        assert!(log.contains("ignoring unusable compiled-plugin cache"), "{log}");
        assert_eq!(std::fs::read(entry).unwrap().len(), good.len(), "the entry is written again");
        // An entry others can write is not deserialised, and is replaced.
        chmod(entry, 0o666);
        let (loaded, log) = crate::logging::capture(|| load(&engine, wasm, None, Some(&cache)));
        loaded.unwrap();
        assert_eq!(warnings(&log), 1, "{log}");
        assert!(
            log.contains(&format!(
                "ignoring compiled-plugin cache {}: it is writable by its group and others (mode 666)",
                entry.display()
            )),
            "{log}"
        );
        assert_eq!(mode(entry), 0o600);
    }

    /// A directory that others can write, or that is another user's, is
    /// not used, and one warning says which and why.
    #[test]
    fn a_directory_others_can_write_is_not_used() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("shared");
        std::fs::create_dir(&dir).unwrap();
        for (mode, why) in [
            (0o777, "writable by its group and others (mode 777)"),
            (0o775, "writable by its group (mode 775)"),
            (0o1757, "writable by others (mode 1757)"),
        ] {
            chmod(&dir, mode);
            let cache = Cache::new(dir.clone());
            let (usable, log) =
                crate::logging::capture(|| (cache.usable_dir().is_some(), cache.usable_dir().is_some()));
            assert_eq!(usable, (false, false));
            assert_eq!(warnings(&log), 1, "{log}");
            assert!(
                log.contains(&format!("not using the compiled-plugin cache {}: it is {why}", dir.display())),
                "{log}"
            );
        }
        chmod(&dir, 0o755);
        assert!(Cache::new(dir.clone()).usable_dir().is_some());
        if give_away(&dir) {
            let cache = Cache::new(dir.clone());
            let (usable, log) = crate::logging::capture(|| cache.usable_dir().is_some());
            assert!(!usable);
            assert!(log.contains("it belongs to uid 65534, not to this user"), "{log}");
        }
    }

    #[test]
    fn only_a_private_regular_file_is_trusted() {
        let scratch = tempfile::tempdir().unwrap();
        let entry = scratch.path().join("x.cwasm");
        assert_eq!(trusted_entry(&entry), Ok(false));
        std::fs::write(&entry, b"x").unwrap();
        chmod(&entry, 0o644);
        assert_eq!(trusted_entry(&entry), Ok(true));
        chmod(&entry, 0o646);
        assert_eq!(trusted_entry(&entry), Err("it is writable by others (mode 646)".into()));
        chmod(&entry, 0o600);
        let link = scratch.path().join("y.cwasm");
        std::os::unix::fs::symlink(&entry, &link).unwrap();
        assert_eq!(trusted_entry(&link), Err("it is not a regular file".into()));
        if give_away(&entry) {
            assert!(trusted_entry(&entry).unwrap_err().starts_with("it belongs to uid 65534"));
        }
    }
}
