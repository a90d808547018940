//! The store's operations as SFTP requests. Requests for one file's
//! chunks are pipelined (`IN_FLIGHT` at once): one at a time, each chunk
//! would cost a round trip.

use crate::location::{is_meta, is_temp, parents, temp_path};
use crate::session::Extensions;
use crate::{CHUNK, IN_FLIGHT};
use futures::{StreamExt, TryStreamExt, stream};
use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::extensions::HardlinkExtension;
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};

pub type Result<T> = std::result::Result<T, SftpError>;

/// Whether an SFTP error is the server's "no such file".
pub fn is_missing(e: &SftpError) -> bool {
    matches!(e, SftpError::Status(s) if s.status_code == StatusCode::NoSuchFile)
}

fn is_eof(e: &SftpError) -> bool {
    matches!(e, SftpError::Status(s) if s.status_code == StatusCode::Eof)
}

/// Where and what a put writes.
pub struct Put<'a> {
    pub path: &'a str,
    pub data: &'a [u8],
    /// A file that describes the old version, removed just before the new
    /// one takes its place (the object's metadata file).
    pub stale: Option<&'a str>,
    /// For the temporary file's name.
    pub random: u64,
}

/// Write `data` to `path` atomically: into a temporary file beside it,
/// synced, then renamed over it. A reader sees the old file or the new
/// one, never part of one.
pub async fn put(s: &RawSftpSession, ext: Extensions, p: Put<'_>) -> Result<()> {
    let Put { path, data, stale, random } = p;
    let temp = temp_path(path, random);
    let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE;
    let handle = match s.open(&temp, flags, FileAttributes::empty()).await {
        Err(e) if is_missing(&e) => {
            make_dirs(s, path).await?;
            s.open(&temp, flags, FileAttributes::empty()).await?
        }
        other => other?,
    };
    let written = write_all(s, ext, &handle.handle, data).await;
    let closed = s.close(handle.handle).await;
    let placed = async {
        written?;
        closed?;
        if let Some(stale) = stale {
            remove_quietly(s, stale).await?;
        }
        rename_over(s, ext, &temp, path).await
    }
    .await;
    if placed.is_err() {
        // Best effort: a leftover temporary file is skipped by listings.
        let _ = s.remove(&temp).await;
    }
    placed
}

async fn write_all(s: &RawSftpSession, ext: Extensions, handle: &str, data: &[u8]) -> Result<()> {
    stream::iter(data.chunks(CHUNK).enumerate())
        .map(|(i, chunk)| s.write(handle, (i * CHUNK) as u64, chunk.to_vec()))
        .buffer_unordered(IN_FLIGHT)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    if ext.fsync {
        s.fsync(handle).await?;
    }
    Ok(())
}

/// Rename `from` over `to`. With `posix-rename@openssh.com` the target is
/// replaced atomically. Without it, SFTP's rename refuses an existing
/// target (on OpenSSH), so the old one is removed first: for a moment the
/// key is missing, never wrong.
async fn rename_over(s: &RawSftpSession, ext: Extensions, from: &str, to: &str) -> Result<()> {
    if ext.posix_rename {
        let paths = HardlinkExtension { oldpath: from.into(), newpath: to.into() };
        return match s.extended("posix-rename@openssh.com", paths.try_into()?).await? {
            Packet::Status(st) if st.status_code == StatusCode::Ok => Ok(()),
            Packet::Status(st) => Err(SftpError::Status(st)),
            _ => Err(SftpError::UnexpectedPacket),
        };
    }
    match s.rename(from, to).await {
        Ok(_) => Ok(()),
        // SFTP v3 answers an existing target with its catch-all Failure.
        // Only then, and only while our file is still there, is the old
        // one removed; a timeout or a lost connection may have renamed
        // already, and removing `to` then would remove the new object.
        Err(SftpError::Status(st)) if st.status_code == StatusCode::Failure => {
            let (target, ours) = futures::join!(s.stat(to), s.stat(from));
            if target.is_err() || ours.is_err() {
                return Err(SftpError::Status(st));
            }
            s.remove(to).await?;
            s.rename(from, to).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// Create the directories above `path`, outermost first; one that exists
/// already is fine. Only after a put found its directory missing.
async fn make_dirs(s: &RawSftpSession, path: &str) -> Result<()> {
    for dir in parents(path) {
        if let Err(e) = s.mkdir(&dir, FileAttributes::empty()).await {
            // Exists already (SFTP v3 has no code for that), or a real
            // failure: stat tells which.
            match s.stat(&dir).await {
                Ok(a) if a.attrs.is_dir() => {}
                _ => return Err(e),
            }
        }
    }
    Ok(())
}

/// `len` bytes from `offset` (fewer at the end of the file).
pub async fn read(s: &RawSftpSession, path: &str, offset: u64, len: Option<u64>) -> Result<Vec<u8>> {
    let handle = s.open(path, OpenFlags::READ, FileAttributes::empty()).await?.handle;
    let result = read_open(s, &handle, offset, len).await;
    let _ = s.close(handle).await;
    result
}

async fn read_open(s: &RawSftpSession, handle: &str, offset: u64, len: Option<u64>) -> Result<Vec<u8>> {
    let Some(size) = s.fstat(handle).await?.attrs.size else {
        return Err(SftpError::UnexpectedPacket);
    };
    let end = len.map_or(size, |l| offset.saturating_add(l).min(size));
    let starts = (offset.min(end)..end).step_by(CHUNK);
    let chunks: Vec<Vec<u8>> = stream::iter(starts)
        .map(|at| read_chunk(s, handle, at, (end - at).min(CHUNK as u64) as u32))
        .buffered(IN_FLIGHT)
        .try_collect()
        .await?;
    let data = chunks.concat();
    // Every chunk whole, or the bytes would shift: a file that shrank or
    // grew while it was read is read again by the host's retry.
    if data.len() as u64 != end - offset.min(end) {
        return Err(SftpError::UnexpectedBehavior(format!(
            "the file changed while it was read ({} bytes of {})",
            data.len(),
            end - offset.min(end)
        )));
    }
    Ok(data)
}

/// One chunk, read again from where a short answer stopped (a server may
/// answer less than asked) until it is whole or the file ends.
async fn read_chunk(s: &RawSftpSession, handle: &str, at: u64, len: u32) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len as usize);
    while out.len() < len as usize {
        match s.read(handle, at + out.len() as u64, len - out.len() as u32).await {
            Ok(d) if d.data.is_empty() => break,
            // More than asked: never trusted (it would shift later bytes),
            // and a server that does it will again.
            Ok(d) if d.data.len() > len as usize - out.len() => {
                return Err(SftpError::Limited("the server answered a read with more bytes than asked".into()));
            }
            Ok(d) => out.extend_from_slice(&d.data),
            Err(e) if is_eof(&e) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// A file's size and modification time (seconds), or `None` if missing
/// or not a file.
pub async fn stat(s: &RawSftpSession, path: &str) -> Result<Option<(u64, u32)>> {
    match s.stat(path).await {
        Ok(a) if !a.attrs.is_dir() => Ok(Some((a.attrs.size.unwrap_or(0), a.attrs.mtime.unwrap_or(0)))),
        Ok(_) => Ok(None),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every file below `dir` (absolute, ending in `/`), as (path relative to
/// `dir`, size, mtime); a missing directory has none. Temporary files of
/// puts in progress or cut short are skipped.
pub async fn walk(s: &RawSftpSession, dir: &str) -> Result<Vec<(String, u64, u32)>> {
    let mut found = Vec::new();
    let mut pending = vec![String::new()];
    while let Some(rel) = pending.pop() {
        let handle = match s.opendir(format!("{dir}{rel}")).await {
            Ok(h) => h.handle,
            // The replica's directory before its first write, or a
            // directory removed since it was listed: nothing below it.
            Err(e) if is_missing(&e) => continue,
            Err(e) => return Err(e),
        };
        let listed = read_dir(s, &handle).await;
        let _ = s.close(handle).await;
        for f in listed? {
            if f.filename == "." || f.filename == ".." {
                continue;
            }
            let name = format!("{rel}{}", f.filename);
            if f.attrs.is_dir() {
                pending.push(format!("{name}/"));
            } else if !is_temp(&f.filename) && !is_meta(&f.filename) {
                found.push((name, f.attrs.size.unwrap_or(0), f.attrs.mtime.unwrap_or(0)));
            }
        }
    }
    Ok(found)
}

async fn read_dir(s: &RawSftpSession, handle: &str) -> Result<Vec<russh_sftp::protocol::File>> {
    let mut all = Vec::new();
    loop {
        match s.readdir(handle).await {
            Ok(name) => all.extend(name.files),
            Err(e) if is_eof(&e) => return Ok(all),
            Err(e) => return Err(e),
        }
    }
}

/// Remove the temporary files in `dir` (absolute or relative, ending in
/// `/`) older than `stale` seconds at `now` (Unix seconds): puts a killed
/// process left. A put in progress is younger; should clocks disagree and
/// one be removed, its rename fails and the host puts it again.
pub async fn sweep(s: &RawSftpSession, dir: &str, now: u64, stale: u64) -> Result<()> {
    let handle = s.opendir(dir).await?.handle;
    let listed = read_dir(s, &handle).await;
    let _ = s.close(handle).await;
    let old: Vec<String> = listed?
        .into_iter()
        .filter(|f| is_temp(&f.filename) && !f.attrs.is_dir())
        .filter(|f| u64::from(f.attrs.mtime.unwrap_or(u32::MAX)).saturating_add(stale) < now)
        .map(|f| format!("{dir}{}", f.filename))
        .collect();
    if !old.is_empty() {
        sluice_sdk::info!("removing {} temporary files of puts cut short in {dir}", old.len());
    }
    remove_all(s, &old).await.into_iter().flatten().next().map_or(Ok(()), Err)
}

/// Remove a file; a missing one is already gone.
pub async fn remove_quietly(s: &RawSftpSession, path: &str) -> Result<()> {
    match s.remove(path).await {
        Err(e) if !is_missing(&e) => Err(e),
        _ => Ok(()),
    }
}

/// A small file's text, or `None` if it is missing.
pub async fn read_text(s: &RawSftpSession, path: &str) -> Result<Option<String>> {
    match read(s, path, 0, None).await {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Remove files; a missing one is already gone. Each path's failure, if
/// any, in order.
pub async fn remove_all(s: &RawSftpSession, paths: &[String]) -> Vec<Option<SftpError>> {
    stream::iter(paths).map(|p| async move { remove_quietly(s, p).await.err() }).buffered(IN_FLIGHT).collect().await
}
