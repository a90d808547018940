//! Multipart uploads: parts are files in a private directory until the
//! upload completes, then they are streamed into one temp file beside the
//! target and committed like a put. Memory stays at one copy buffer.

use crate::fsutil::{self, Root};
use sluice_sdk::*;
use std::fs::{self, File};
use std::io::Write;
use std::path::PathBuf;

const UPLOADS: &str = "uploads";
/// Copy buffer when assembling parts: 1 MiB turns a 1 GB object into a
/// thousand host calls instead of a hundred thousand.
const COPY_BUFFER: usize = 1 << 20;

fn upload_dir(root: &Root, key: &str, upload_id: &str) -> Result<PathBuf, Error> {
    if upload_id.is_empty() || !upload_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::invalid_config(format!("malformed upload id {upload_id:?}")));
    }
    let dir = root.private_dir(UPLOADS).join(upload_id);
    match fs::read_to_string(dir.join("key")) {
        Ok(k) if k == key => Ok(dir),
        Ok(_) => Err(Error::invalid_config(format!("upload {upload_id} is not for key {key:?}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::not_found(format!("no upload {upload_id} for {key:?}")))
        }
        Err(e) => Err(e.into()),
    }
}

pub fn create(root: &Root, key: &str, options: &PutOptions) -> Result<String, Error> {
    root.path(key)?;
    let id = format!("{:016x}{:016x}", random_u64(), random_u64());
    let dir = root.private_dir(UPLOADS).join(&id);
    fs::create_dir_all(&dir)?;
    let precondition = match &options.precondition {
        Precondition::None => "none".to_string(),
        Precondition::IfAbsent => "absent".to_string(),
        Precondition::IfMatch(etag) => format!("match:{etag}"),
    };
    let metadata: String = options.metadata.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    fs::write(dir.join("precondition"), precondition)?;
    fs::write(dir.join("metadata"), metadata)?;
    // Written last: an upload directory without `key` is incomplete and
    // treated as unknown.
    fs::write(dir.join("key"), key)?;
    Ok(id)
}

pub fn upload_part(root: &Root, key: &str, upload_id: &str, number: u32, data: &[u8]) -> Result<UploadedPart, Error> {
    let dir = upload_dir(root, key, upload_id)?;
    let path = dir.join(format!("{number:05}.part"));
    // Parts are not fsynced: only the assembled object must survive a
    // crash, and it is synced before it is renamed into place.
    let tmp = root.write_temp_unsynced(&path, |f| fsutil::write_new(f, data))?;
    let renamed = fs::rename(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    renamed?;
    let etag = fsutil::etag_of(&fs::metadata(&path)?);
    Ok(UploadedPart { part_number: number, etag })
}

pub fn complete(root: &Root, key: &str, upload_id: &str, parts: &[UploadedPart]) -> Result<(), Error> {
    let dir = upload_dir(root, key, upload_id)?;
    if parts.is_empty() {
        return Err(Error::invalid_config("an upload needs at least one part"));
    }
    if parts.windows(2).any(|w| w[0].part_number >= w[1].part_number) {
        return Err(Error::invalid_config("parts must be listed in ascending order of part number"));
    }
    let mut files = Vec::with_capacity(parts.len());
    for part in parts {
        let path = dir.join(format!("{:05}.part", part.part_number));
        let meta = fs::metadata(&path).map_err(|_| {
            Error::invalid_config(format!("part {} of upload {upload_id} was never uploaded", part.part_number))
        })?;
        if fsutil::etag_of(&meta) != part.etag {
            return Err(Error::invalid_config(format!("part {} etag does not match", part.part_number)));
        }
        files.push(path);
    }
    let target = root.path(key)?;
    let (tmp, _) = root.write_temp(&target, |out| {
        // Big reads and writes: each is a host call from inside wasm.
        let mut buf = vec![0u8; COPY_BUFFER];
        for path in &files {
            let mut part = File::open(path)?;
            loop {
                let n = std::io::Read::read(&mut part, &mut buf)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])?;
            }
        }
        Ok(())
    })?;
    let precondition = match fs::read_to_string(dir.join("precondition"))?.as_str() {
        "none" => Precondition::None,
        "absent" => Precondition::IfAbsent,
        other => Precondition::IfMatch(other.strip_prefix("match:").unwrap_or(other).to_string()),
    };
    let metadata = fs::read_to_string(dir.join("metadata"))?
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let options = PutOptions { precondition, metadata, content_sha256: None };
    root.commit(&tmp, &target, &options)?;
    remove_upload_dir(root, &dir);
    Ok(())
}

pub fn abort(root: &Root, key: &str, upload_id: &str) -> Result<(), Error> {
    match upload_dir(root, key, upload_id) {
        Ok(dir) => {
            fs::remove_dir_all(&dir)?;
            remove_upload_dir(root, &dir);
            Ok(())
        }
        Err(Error::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Remove a finished upload's directory, and the uploads directory once
/// empty, so a replica holds only its objects between uploads.
fn remove_upload_dir(root: &Root, dir: &std::path::Path) {
    let _ = fs::remove_dir_all(dir);
    let _ = fs::remove_dir(root.private_dir(UPLOADS));
}
