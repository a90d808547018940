//! Where encryption meets the store (decision 20): segments going up are
//! sealed here, objects coming back opened here, so nothing above
//! `client` ever handles ciphertext and no plugin ever sees plaintext.

use super::error::{Class, ReplicaError};
use crate::plugin::PluginStore;
use crate::segment::Header;
use crate::segment::sealed::{Keys, OpenError, is_sealed};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A segment small enough to be held whole, sealed in memory.
pub fn seal_bytes(store: &PluginStore, keys: &Keys, plain: &[u8]) -> Result<(Vec<u8>, Header), ReplicaError> {
    let mut out = Vec::with_capacity(plain.len() + 1024);
    let header = keys.seal(plain, &mut out).map_err(|e| seal_failed(store, "a segment", e))?;
    Ok((out, header))
}

/// A spooled segment sealed into a scratch file beside it, which is
/// unlinked at once: the returned handle is its only reference, so it
/// takes space only while the upload runs and never outlives a crash.
pub async fn seal_file(
    store: &PluginStore,
    keys: &Arc<Keys>,
    plain: &Path,
) -> Result<(std::fs::File, u64, Header), ReplicaError> {
    let (keys, src) = (keys.clone(), plain.to_path_buf());
    let sealed = tokio::task::spawn_blocking(move || -> Result<_, crate::segment::FormatError> {
        let tmp = scratch(&src);
        let result = (|| -> Result<_, crate::segment::FormatError> {
            let input = std::io::BufReader::new(std::fs::File::open(&src)?);
            let out = std::fs::File::options().read(true).write(true).create_new(true).open(&tmp)?;
            let mut w = std::io::BufWriter::new(out);
            let header = keys.seal(input, &mut w)?;
            let out = w.into_inner().map_err(|e| e.into_error())?;
            let len = out.metadata()?.len();
            Ok((out, len, header))
        })();
        let _ = std::fs::remove_file(&tmp);
        let (mut out, len, header) = result?;
        std::io::Seek::rewind(&mut out)?;
        Ok((out, len, header))
    })
    .await
    .map_err(|e| ReplicaError::Bug { replica: store.labels().replica.clone(), msg: format!("sealing failed: {e}") })?;
    sealed.map_err(|e| seal_failed(store, &plain.display().to_string(), e))
}

fn scratch(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sealing");
    PathBuf::from(name)
}

fn seal_failed(store: &PluginStore, what: &str, e: crate::segment::FormatError) -> ReplicaError {
    let replica = store.labels().replica.clone();
    match e {
        crate::segment::FormatError::Io(source) => {
            ReplicaError::Local { replica, what: format!("cannot encrypt {what}"), source }
        }
        other => ReplicaError::DamagedSpool { replica, path: what.to_string(), msg: other.to_string() },
    }
}

/// Bytes fetched from the store, opened if sealed.
pub fn open_bytes(store: &PluginStore, key: &str, bytes: Vec<u8>) -> Result<Vec<u8>, ReplicaError> {
    if !is_sealed(&bytes) {
        return Ok(bytes);
    }
    let keys = keys_for(store, key)?;
    let mut out = Vec::with_capacity(bytes.len());
    keys.open(&bytes[..], &mut out).map_err(|e| open_failed(store, key, e))?;
    Ok(out)
}

/// A file downloaded from the store, opened in place if sealed.
pub async fn open_file(store: &PluginStore, key: &str, path: &Path) -> Result<(), ReplicaError> {
    let mut start = [0u8; 12];
    let read = std::fs::File::open(path).and_then(|mut f| std::io::Read::read(&mut f, &mut start));
    if !read.is_ok_and(|n| is_sealed(&start[..n])) {
        return Ok(());
    }
    let keys = keys_for(store, key)?.clone();
    let (src, tmp) = (path.to_path_buf(), scratch(path));
    let opened = tokio::task::spawn_blocking(move || -> Result<(), OpenError> {
        let result = (|| -> Result<(), OpenError> {
            let input = std::io::BufReader::new(std::fs::File::open(&src)?);
            let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            keys.open(input, &mut out)?;
            out.into_inner().map_err(|e| e.into_error())?;
            std::fs::rename(&tmp, &src)?;
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    })
    .await
    .map_err(|e| ReplicaError::Bug {
        replica: store.labels().replica.clone(),
        msg: format!("decrypting failed: {e}"),
    })?;
    opened.map_err(|e| open_failed(store, key, e))
}

/// The plaintext header of a sealed object from its first bytes.
pub fn peek(store: &PluginStore, key: &str, start: &[u8]) -> Result<Header, ReplicaError> {
    if !is_sealed(start) {
        return Err(ReplicaError::Store {
            replica: store.labels().replica.clone(),
            msg: format!("{key} is not encrypted"),
        });
    }
    keys_for(store, key)?.peek(start).map_err(|e| open_failed(store, key, e))
}

fn keys_for<'a>(store: &'a PluginStore, key: &str) -> Result<&'a Arc<Keys>, ReplicaError> {
    store.keys().ok_or_else(|| ReplicaError::Sealed {
        replica: store.labels().replica.clone(),
        key: key.to_string(),
        msg: "it is encrypted (age) and this replica has no `age:` identities configured: add them to the replica's config".into(),
        class: Class::Operator,
    })
}

fn open_failed(store: &PluginStore, key: &str, e: OpenError) -> ReplicaError {
    let class = match &e {
        OpenError::NoMatchingKey => Class::Operator,
        OpenError::Corrupt(_) => Class::Corrupt,
        OpenError::Io(io) => Class::of_io(io),
    };
    ReplicaError::Sealed { replica: store.labels().replica.clone(), key: key.to_string(), msg: e.to_string(), class }
}
