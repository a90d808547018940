//! Page digests: a strong hash of every captured page, kept in the meta
//! directory so a restart that lost the WAL's thread (sluice was killed
//! and the application's checkpoint restarted the WAL meanwhile) ships only
//! the pages that differ from what the replica holds, instead of the whole
//! database as a snapshot (DESIGN.md, decision 19).
//!
//! `pages.digest` holds one 32-byte entry per page at `(pgno - 1) * 32`:
//! the first 24 bytes of the page's SHA-256, then its 64-bit page hash
//! (`checksum::page_hash`, little-endian). The file is written beside the
//! state, in no particular order with it and without fsync: an entry
//! counts only if its page hash equals the one the state records for that
//! page, so an entry left behind or ahead by a crash, a failed write or a
//! torn one (entries are sector-aligned and written front to back, so a
//! torn write leaves the old page hash at the end) is never trusted, and
//! that page is shipped. The 64-bit page hashes decide nothing alone: a
//! page counts as unchanged only if its SHA-256 digest matches too.

use crate::checksum::page_hash;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const FILE_NAME: &str = "pages.digest";
pub const ENTRY: usize = 32;
const SHA_BYTES: usize = 24;
/// Digests of consecutive pages are gathered up to this many bytes before
/// one write: a snapshot's pass then costs one system call per 2,048 pages.
const RUN_BYTES: usize = 64 << 10;

/// One page's entry.
pub type Entry = [u8; ENTRY];

/// The entry of page `pgno` holding `page`, and its page hash.
pub fn entry(pgno: u32, page: &[u8]) -> (Entry, u64) {
    let hash = page_hash(pgno, page);
    let mut e = [0u8; ENTRY];
    e[..SHA_BYTES].copy_from_slice(&Sha256::digest(page)[..SHA_BYTES]);
    e[SHA_BYTES..].copy_from_slice(&hash.to_le_bytes());
    (e, hash)
}

/// The digests file of a meta directory.
pub fn path(meta: &Path) -> PathBuf {
    meta.join(FILE_NAME)
}

/// The stored entries of pages `1..=pages`, read in order a chunk at a
/// time (a resume's pass over the pages): memory stays bounded whatever the
/// database's size.
pub struct Stored {
    file: File,
    pages: u32,
    chunk: Vec<u8>,
    chunk_start: u32,
}

impl Stored {
    /// The stored entries, or `None` if the file is missing, shorter than
    /// `pages` entries, or unreadable: then nothing can be compared.
    pub fn open(meta: &Path, pages: u32) -> Option<Stored> {
        let file = File::open(path(meta)).ok()?;
        let len = file.metadata().ok()?.len();
        (len >= pages as u64 * ENTRY as u64).then(|| Stored { file, pages, chunk: Vec::new(), chunk_start: 0 })
    }

    /// Page `pgno`'s stored entry; `None` past the stored pages or if it
    /// cannot be read (the page then ships).
    pub fn get(&mut self, pgno: u32) -> Option<Entry> {
        if pgno == 0 || pgno > self.pages {
            return None;
        }
        let in_chunk = pgno >= self.chunk_start && ((pgno - self.chunk_start) as usize) < self.chunk.len() / ENTRY;
        if !in_chunk {
            let count = ((self.pages - pgno + 1) as usize).min(RUN_BYTES / ENTRY);
            self.chunk.resize(count * ENTRY, 0);
            self.chunk_start = pgno;
            if self.file.read_exact_at(&mut self.chunk, (pgno as u64 - 1) * ENTRY as u64).is_err() {
                self.chunk.clear();
                return None;
            }
        }
        let at = (pgno - self.chunk_start) as usize * ENTRY;
        self.chunk[at..at + ENTRY].try_into().ok()
    }
}

/// Whether `stored` may stand for a page whose state records `state_hash`
/// and which now reads as `now`: the stored entry describes the content the
/// replica holds, and that content is what the page holds now.
pub fn unchanged(stored: &Entry, state_hash: u64, now: &Entry) -> bool {
    stored[SHA_BYTES..] == state_hash.to_le_bytes() && stored == now
}

/// Writes entries, gathering runs of consecutive pages. A failed write is
/// kept for the caller to report, never returned: a missing entry only
/// costs that page's shipping on some later restart.
pub struct Writer {
    path: PathBuf,
    file: Option<File>,
    run_start: u32,
    run: Vec<u8>,
    failed: Option<io::Error>,
}

impl Writer {
    /// A writer for the digests of the meta directory `meta`; nothing is
    /// opened until used.
    pub fn new(meta: &Path) -> Writer {
        Writer { path: path(meta), file: None, run_start: 0, run: Vec::new(), failed: None }
    }

    /// Record page `pgno`'s entry.
    pub fn put(&mut self, pgno: u32, e: &Entry) {
        let next = self.run_start as usize + self.run.len() / ENTRY;
        if self.run.is_empty() || pgno as usize != next || self.run.len() >= RUN_BYTES {
            self.flush();
            self.run_start = pgno;
        }
        self.run.extend_from_slice(e);
    }

    /// Write what is gathered.
    pub fn flush(&mut self) {
        if self.run.is_empty() {
            return;
        }
        let offset = (self.run_start as u64 - 1) * ENTRY as u64;
        let run = std::mem::take(&mut self.run);
        if let Err(e) = self.open().and_then(|f| f.write_all_at(&run, offset)) {
            // Reopened next time: the file may have been removed (reset).
            self.file = None;
            self.failed.get_or_insert(e);
        }
        // Keep the buffer's allocation for the next run.
        self.run = run;
        self.run.clear();
    }

    /// Write what is gathered and close the file (a resting database
    /// holds no descriptor); the next write opens it again.
    pub fn close(&mut self) {
        self.flush();
        self.file = None;
    }

    /// The first write that failed since the last call, if one did.
    pub fn take_error(&mut self) -> Option<(PathBuf, io::Error)> {
        self.failed.take().map(|e| (self.path.clone(), e))
    }

    fn open(&mut self) -> io::Result<&File> {
        match &mut self.file {
            Some(f) => Ok(f),
            slot => Ok(slot.insert(OpenOptions::new().write(true).create(true).truncate(false).open(&self.path)?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_counts_only_for_the_content_the_state_records() {
        let dir = tempfile::tempdir().unwrap();
        let (old, old_hash) = entry(3, &[1u8; 512]);
        let (new, new_hash) = entry(3, &[2u8; 512]);
        assert!(unchanged(&old, old_hash, &old));
        assert!(!unchanged(&old, old_hash, &new), "the page changed");
        assert!(!unchanged(&old, new_hash, &old), "the entry was left behind by a crash: the replica holds `new`");
        let mut torn = new;
        torn[SHA_BYTES..].copy_from_slice(&old[SHA_BYTES..]);
        assert!(!unchanged(&torn, new_hash, &new), "a torn write keeps the old page hash at the end");
        let mut w = Writer::new(dir.path());
        for pgno in [1, 2, 3, 7] {
            w.put(pgno, &entry(pgno, &[pgno as u8; 512]).0);
        }
        w.flush();
        assert!(w.take_error().is_none());
        let mut stored = Stored::open(dir.path(), 7).unwrap();
        assert_eq!(stored.get(2), Some(entry(2, &[2u8; 512]).0));
        assert_eq!(stored.get(7), Some(entry(7, &[7u8; 512]).0));
        assert_eq!(stored.get(5), Some([0; ENTRY]), "never written");
        assert_eq!(stored.get(8), None, "past the stored pages");
        assert!(Stored::open(dir.path(), 8).is_none(), "the file does not cover page 8");
    }
}
