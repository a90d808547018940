//! Filesystem plumbing: key → path mapping, atomic commits, sidecars, walks.

use sluice_sdk::*;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// Name prefix of this plugin's own files; keys may not use it.
pub const RESERVED: &str = ".sluice-";
/// Sidecar holding an object's user metadata, beside the object.
const SIDECAR: &str = ".sluice-meta.";

/// The replica's root directory.
pub struct Root {
    dir: PathBuf,
}

impl Root {
    /// `file:///abs/path` or `/abs/path`. The host resolves relative paths
    /// before calling, since a plugin has no working directory.
    pub fn from_url(url: &str) -> Result<Root, Error> {
        let path = match url.strip_prefix("file://") {
            Some(rest) => percent_decode(rest.split(['?', '#']).next().unwrap_or(rest))?,
            None if url.contains("://") => {
                return Err(Error::invalid_config(format!("the file plugin serves file:// URLs and paths, not {url}")));
            }
            None => url.to_string(),
        };
        if !path.starts_with('/') {
            return Err(Error::invalid_config(format!("replica path must be absolute, got {path:?}")));
        }
        let dir = PathBuf::from(path.trim_end_matches('/'));
        let dir = if dir.as_os_str().is_empty() { PathBuf::from("/") } else { dir };
        match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => Ok(Root { dir }),
            Ok(_) => Err(Error::invalid_config(format!("{} is not a directory", dir.display()))),
            Err(e) => Err(Error::invalid_config(format!(
                "replica directory {} is not accessible ({e}); the host grants it when the plugin opens",
                dir.display()
            ))),
        }
    }

    /// The path of a (validated) key; refuses this plugin's reserved names.
    pub fn path(&self, key: &str) -> Result<PathBuf, Error> {
        if key.split('/').any(|s| s.starts_with(RESERVED)) {
            return Err(Error::invalid_config(format!("key {key:?} uses the reserved prefix {RESERVED:?}")));
        }
        Ok(self.dir.join(key))
    }

    /// A private working directory (multipart uploads).
    pub fn private_dir(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{RESERVED}{name}"))
    }

    /// Write a temp file beside `target` (same filesystem, so the rename is
    /// atomic) and fsync it. Returns the temp path and the file's metadata,
    /// which a rename or hard link into place leaves as it is.
    pub fn write_temp(
        &self,
        target: &Path,
        fill: impl FnOnce(&mut File) -> std::io::Result<()>,
    ) -> Result<(PathBuf, fs::Metadata), Error> {
        self.temp_file(target, true, fill)
    }

    /// Like `write_temp`, without the fsync (for scratch data).
    pub fn write_temp_unsynced(
        &self,
        target: &Path,
        fill: impl FnOnce(&mut File) -> std::io::Result<()>,
    ) -> Result<PathBuf, Error> {
        Ok(self.temp_file(target, false, fill)?.0)
    }

    fn temp_file(
        &self,
        target: &Path,
        sync: bool,
        fill: impl FnOnce(&mut File) -> std::io::Result<()>,
    ) -> Result<(PathBuf, fs::Metadata), Error> {
        let dir = target.parent().unwrap_or(&self.dir);
        // Most keys land in a directory that exists (one per level): try
        // the file first and create directories only when it is missing.
        let tmp = dir.join(format!("{RESERVED}tmp-{:016x}", random_u64()));
        let result = match File::create(&tmp) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(dir)?;
                File::create(&tmp)
            }
            other => other,
        }
        .and_then(|mut f| {
            fill(&mut f)?;
            f.flush()?;
            if sync {
                f.sync_all()?;
            }
            f.metadata()
        });
        match result {
            Ok(meta) => Ok((tmp, meta)),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e.into())
            }
        }
    }

    /// Move a synced temp file into place under the put's precondition,
    /// then write the metadata sidecar and fsync the directory.
    pub fn commit(&self, tmp: &Path, target: &Path, options: &PutOptions) -> Result<(), Error> {
        let result = self.commit_inner(tmp, target, options);
        // A rename consumed the temp file; a hard link or a failure left it.
        if result.is_err() || matches!(options.precondition, Precondition::IfAbsent) {
            let _ = fs::remove_file(tmp);
        }
        result
    }

    fn commit_inner(&self, tmp: &Path, target: &Path, options: &PutOptions) -> Result<(), Error> {
        let sidecar = sidecar_path(target);
        match &options.precondition {
            Precondition::None => fs::rename(tmp, target)?,
            // A hard link fails atomically if the name exists: the only
            // race-free create-if-absent a directory offers.
            Precondition::IfAbsent => match fs::hard_link(tmp, target) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(Error::precondition_failed(format!("{} already exists", target.display())));
                }
                Err(e) => return Err(e.into()),
            },
            // Compare, then rename: two writers racing within microseconds
            // on one directory could both pass. The host never runs two
            // writers on one replica, so this guards against stale state.
            Precondition::IfMatch(expected) => {
                let current = etag_of(&fs::metadata(target).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        Error::precondition_failed(format!("{} does not exist", target.display()))
                    }
                    _ => e.into(),
                })?);
                if &current != expected {
                    return Err(Error::precondition_failed(format!(
                        "{} has etag {current}, not {expected}",
                        target.display()
                    )));
                }
                fs::rename(tmp, target)?;
            }
        }
        if options.metadata.is_empty() {
            // A new object has no sidecar (delete removes it first), so only
            // an overwrite can leave one behind.
            if !matches!(options.precondition, Precondition::IfAbsent) {
                remove_if_exists(&sidecar)?;
            }
        } else {
            write_sidecar(self, &sidecar, &options.metadata)?;
        }
        sync_dir(target.parent().unwrap_or(&self.dir))
    }

    /// Stat an object. Directories and reserved names are not objects.
    pub fn stat(&self, key: &str, path: &Path) -> Result<ObjectMeta, Error> {
        let meta = fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::not_found(format!("no object {key:?}")),
            _ => e.into(),
        })?;
        if !meta.is_file() {
            return Err(Error::not_found(format!("no object {key:?}")));
        }
        Ok(object_meta(key, &meta))
    }

    /// Read an object or a range of it.
    pub fn read(&self, key: &str, range: Option<ByteRange>) -> Result<Vec<u8>, Error> {
        let path = self.path(key)?;
        let not_found = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound => Error::not_found(format!("no object {key:?}")),
            _ => e.into(),
        };
        let mut file = File::open(&path).map_err(not_found)?;
        let Some(r) = range else {
            let mut out = Vec::new();
            file.read_to_end(&mut out)?;
            return Ok(out);
        };
        let len = file.metadata()?.len();
        let start = r.offset.min(len);
        let end = r.offset.saturating_add(r.length).min(len);
        let mut out = vec![0u8; (end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut out)?;
        Ok(out)
    }

    /// Collect every key under `prefix`, skipping directories that cannot
    /// hold a match and this plugin's own files.
    pub fn walk(&self, prefix: &str, out: &mut Vec<String>) -> Result<(), Error> {
        self.walk_dir(&self.dir, "", prefix, out)
    }

    fn walk_dir(&self, dir: &Path, rel: &str, prefix: &str, out: &mut Vec<String>) -> Result<(), Error> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        // Writers and deletes run while we list: an entry that vanishes
        // between readdir and stat is simply not listed.
        let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            let Ok(name) = entry.file_name().into_string() else { continue };
            if name.starts_with(RESERVED) {
                continue;
            }
            let key = format!("{rel}{name}");
            let kind = match entry.file_type() {
                Ok(k) => k,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            if kind.is_dir() {
                let sub = format!("{key}/");
                if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                    self.walk_dir(&entry.path(), &sub, prefix, out)?;
                }
            } else if kind.is_file() && key.starts_with(prefix) {
                out.push(key);
            }
        }
        Ok(())
    }

    /// Remove directories left empty by a delete, up to (not including) the root.
    pub fn prune_empty_dirs(&self, path: &Path) {
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.dir || !d.starts_with(&self.dir) || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }
}

/// Bytes per positioned write: the host copies each write's buffer out of
/// the plugin's memory before writing it, so a multipart part of several
/// MiB goes in pieces rather than as one host-side copy of the whole part.
/// At 256 KiB the copy comes from the host's reused heap (its allocator
/// maps anything larger afresh); a level-0 segment is one write.
const WRITE_CHUNK: usize = 256 << 10;

/// Write all of `data` to a new file at its start. A positioned write is
/// one `descriptor.write` host call, which the host runs inline for a
/// small call; `File::write` goes through a WASI output stream, which the
/// host hands to another thread and back for every write.
pub fn write_new(file: &File, data: &[u8]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut done = 0;
    while done < data.len() {
        let rest = &data[done..(done + WRITE_CHUNK).min(data.len())];
        // SAFETY: `rest` is a live slice of `rest.len()` bytes and the
        // descriptor belongs to `file`, which outlives the call.
        let n = unsafe { libc::pwrite(file.as_raw_fd(), rest.as_ptr().cast(), rest.len(), done as libc::off_t) };
        match n {
            n if n > 0 => done += n as usize,
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// What a listing or head reports of the file behind `key`.
pub fn object_meta(key: &str, meta: &fs::Metadata) -> ObjectMeta {
    let mut object = ObjectMeta::new(key, meta.len(), etag_of(meta));
    object.modified_ms =
        meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_millis() as u64);
    object
}

/// Size and modification time identify a version: every write goes
/// through a fresh temp file, so both change together.
pub fn etag_of(meta: &fs::Metadata) -> String {
    let nanos = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:x}-{nanos:x}", meta.len())
}

pub fn sidecar_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{SIDECAR}{name}"))
}

/// Sidecars are `key=value` lines; keys are restricted by the contract,
/// values may not contain newlines.
fn write_sidecar(root: &Root, sidecar: &Path, metadata: &[(String, String)]) -> Result<(), Error> {
    let mut text = String::new();
    for (k, v) in metadata {
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(Error::invalid_config(format!("metadata key {k:?} must be lowercase letters, digits and -")));
        }
        if v.contains(['\n', '\r']) {
            return Err(Error::invalid_config(format!("metadata value for {k:?} contains a newline")));
        }
        text.push_str(&format!("{k}={v}\n"));
    }
    // Metadata is informational (the object itself is authoritative): the
    // directory fsync after the commit is enough.
    let tmp = root.write_temp_unsynced(sidecar, |f| write_new(f, text.as_bytes()))?;
    fs::rename(&tmp, sidecar).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    Ok(())
}

pub fn read_sidecar(path: &Path) -> Result<Vec<(String, String)>, Error> {
    match fs::read_to_string(sidecar_path(path)) {
        Ok(text) => {
            Ok(text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

pub fn remove_if_exists(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// fsync a directory so a rename in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn percent_decode(s: &str) -> Result<String, Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(b) = hex else {
                return Err(Error::invalid_config(format!("bad percent escape in {s:?}")));
            };
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::invalid_config(format!("path {s:?} is not UTF-8")))
}
