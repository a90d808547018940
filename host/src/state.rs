//! Local replication state of one database, kept in its meta directory
//! (`.<name>-sluice` beside the database, like Litestream's meta path):
//! where in the WAL capture stands, the TXID, the checksum, per-page
//! hashes, and the spool of segments not yet shipped everywhere.
//!
//! Crash safety: a segment is in the spool before the state that counts
//! it is written (atomically, by rename). Segments beyond the recorded
//! TXID are leftovers of a crash and are discarded on start, then rebuilt
//! from the WAL, so nothing is lost and nothing shipped twice. Small
//! segments are not fsynced: one a power failure damaged is caught when
//! it is uploaded (see `capture::UNSYNCED_SPOOL_BYTES`).

use crate::checksum::PageHashes;
use crate::wal::WalPos;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The state: one line of JSON, then the page hashes (little-endian u64s).
/// One file, so one rename replaces both atomically.
const STATE_FILE: &str = "state";
/// Earlier builds kept the JSON and the hashes in two files; still read.
const LEGACY_STATE_FILE: &str = "state.json";
const LEGACY_HASHES_FILE: &str = "pages.hash";
const SPOOL_DIR: &str = "spool";
/// Bumped when the state layout changes; an unknown version means a
/// fresh snapshot rather than a misread.
const STATE_VERSION: u32 = 1;

/// Where capture stands in the current WAL epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalMark {
    pub pos: WalPos,
}

/// The persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub page_size: u32,
    /// Last TXID produced (0: nothing yet).
    pub txid: u64,
    pub db_pages: u32,
    pub checksum: u64,
    /// Wall-clock time of the last captured transaction.
    pub timestamp_ms: i64,
    pub wal: Option<WalMark>,
    /// With no WAL epoch in progress: the salt-1 the next epoch must have.
    pub next_salt1: Option<u32>,
    /// With no WAL epoch in progress: size and mtime (ns) of the database
    /// file. A first epoch whose salts cannot be predicted (a fresh
    /// wal-index picks random ones) still continues the chain if the file
    /// was not touched, since only a checkpoint writes it.
    #[serde(default)]
    pub db_stamp: Option<(u64, i64)>,
}

/// The meta directory of one database.
#[derive(Debug, Clone)]
pub struct MetaDir {
    dir: PathBuf,
}

impl MetaDir {
    /// Litestream's default: `.<file name>-sluice` beside the database.
    pub fn default_for(db: &Path) -> PathBuf {
        let name = db.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        db.with_file_name(format!(".{name}-sluice"))
    }

    pub fn open(dir: PathBuf) -> io::Result<MetaDir> {
        fs::create_dir_all(dir.join(SPOOL_DIR))?;
        Ok(MetaDir { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.join(SPOOL_DIR)
    }

    /// A scratch file path in the meta directory (same filesystem as the
    /// spool, so a rename into it is atomic).
    pub fn temp_path(&self, what: &str) -> PathBuf {
        self.dir.join(format!("{what}.{}.tmp", std::process::id()))
    }

    /// Load state and page hashes; `None` when absent, unreadable, or
    /// inconsistent (the caller then starts over with a snapshot).
    pub fn load(&self) -> Option<(State, PageHashes)> {
        let (text, raw) = match fs::read(self.dir.join(STATE_FILE)) {
            Ok(mut bytes) => {
                let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
                    tracing::warn!("ignoring truncated local state in {}", self.dir.display());
                    return None;
                };
                let raw = bytes.split_off(end + 1);
                (String::from_utf8(bytes).ok()?, raw)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.load_legacy()?,
            Err(_) => return None,
        };
        let state: State = match serde_json::from_str(&text) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("ignoring unreadable local state in {}: {e}", self.dir.display());
                return None;
            }
        };
        if state.version != STATE_VERSION {
            return None;
        }
        let hashes: Vec<u64> = raw.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect();
        let hashes = PageHashes::from_vec(state.page_size, hashes);
        if hashes.checksum() != state.checksum || hashes.pages() != state.db_pages {
            tracing::warn!("local page hashes in {} disagree with the recorded state (crash mid-write?); a new snapshot will be taken", self.dir.display());
            return None;
        }
        Some((state, hashes))
    }

    fn load_legacy(&self) -> Option<(String, Vec<u8>)> {
        let text = fs::read_to_string(self.dir.join(LEGACY_STATE_FILE)).ok()?;
        let mut raw = Vec::new();
        File::open(self.dir.join(LEGACY_HASHES_FILE)).ok()?.read_to_end(&mut raw).ok()?;
        Some((text, raw))
    }

    /// Persist state and page hashes together, by atomic rename.
    ///
    /// The rename makes this safe against a crash of the process; no
    /// fsync, because losing the newest state to a power failure is safe
    /// too: the next run either continues from the older state (its spool
    /// segments past it are discarded and rebuilt) or, if a replica already
    /// holds more, continues after the replica with a snapshot. Syncing
    /// three files per sync was most of the replicator's CPU time.
    pub fn save(&self, state: &State, hashes: &PageHashes) -> io::Result<()> {
        // Compact JSON has no newline of its own: the first one ends it.
        let mut bytes = serde_json::to_vec(&State { version: STATE_VERSION, ..state.clone() }).map_err(io::Error::other)?;
        bytes.reserve_exact(1 + hashes.as_slice().len() * 8);
        bytes.push(b'\n');
        for h in hashes.as_slice() {
            bytes.extend_from_slice(&h.to_le_bytes());
        }
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        fs::write(&tmp, &bytes)?;
        fs::rename(&tmp, self.dir.join(STATE_FILE))
    }

    /// Forget everything (`sluice reset`): the next sync snapshots.
    pub fn reset(&self) -> io::Result<()> {
        for f in [STATE_FILE, LEGACY_STATE_FILE, LEGACY_HASHES_FILE] {
            match fs::remove_file(self.dir.join(f)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Small per-replica state (`<name>.json`), see [`Record`].
    pub fn record(&self, name: &str) -> Record {
        Record { path: self.dir.join(format!("{name}.json")), file: None }
    }
}

/// Bytes of a [`Record`]: one sector, so a write of it is never torn.
const RECORD_BYTES: usize = 64;

/// A small JSON record rewritten in place, padded to a fixed length with
/// spaces: an update is one write to a file kept open, where a temp file
/// and a rename cost four system calls and a directory update on every
/// sync. A crash of the process cannot tear a write of one sector, and
/// the record is not synced: a lost or garbled position only means
/// re-uploading segments the replica recognises as its own (or, if
/// unreadable, a snapshot).
pub struct Record {
    path: PathBuf,
    file: Option<File>,
}

impl Record {
    pub fn load<T: for<'de> Deserialize<'de>>(&self) -> Option<T> {
        let text = fs::read_to_string(&self.path).ok()?;
        serde_json::from_str(text.trim_end_matches('\0')).ok()
    }

    pub fn save<T: Serialize>(&mut self, value: &T) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let mut bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
        if bytes.len() >= RECORD_BYTES {
            return Err(io::Error::other(format!("record {} is over {RECORD_BYTES} bytes", self.path.display())));
        }
        bytes.resize(RECORD_BYTES - 1, b' ');
        bytes.push(b'\n');
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                let f = fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&self.path)?;
                // An older, longer layout must not leave a tail behind.
                f.set_len(RECORD_BYTES as u64)?;
                self.file.insert(f)
            }
        };
        file.write_all_at(&bytes, 0)
    }
}

impl State {
    pub fn new(page_size: u32) -> State {
        State { version: STATE_VERSION, page_size, txid: 0, db_pages: 0, checksum: 0, timestamp_ms: 0, wal: None, next_salt1: None, db_stamp: None }
    }
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::page_hash;

    #[test]
    fn records_are_rewritten_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaDir::open(dir.path().join("m")).unwrap();
        let mut record = meta.record("replica-a");
        assert_eq!(record.load::<u64>(), None);
        // The layout before records: pretty JSON, shorter than a record.
        std::fs::write(meta.path().join("replica-a.json"), "{\n  \"shipped\": 7\n}").unwrap();
        assert_eq!(record.load::<serde_json::Value>().unwrap()["shipped"], 7);
        record.save(&serde_json::json!({"shipped": 123456789})).unwrap();
        record.save(&serde_json::json!({"shipped": 8})).unwrap();
        assert_eq!(std::fs::metadata(meta.path().join("replica-a.json")).unwrap().len(), RECORD_BYTES as u64);
        assert_eq!(meta.record("replica-a").load::<serde_json::Value>().unwrap()["shipped"], 8);
        assert!(record.save(&"x".repeat(RECORD_BYTES)).is_err());
    }

    #[test]
    fn save_load_and_detect_inconsistency() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaDir::open(dir.path().join("m")).unwrap();
        assert!(meta.load().is_none());
        let mut hashes = PageHashes::new(4096);
        hashes.set(1, page_hash(1, &[1; 4096]));
        hashes.set(2, page_hash(2, &[2; 4096]));
        let mut state = State::new(4096);
        state.txid = 5;
        state.db_pages = 2;
        state.checksum = hashes.checksum();
        meta.save(&state, &hashes).unwrap();
        let (s, h) = meta.load().unwrap();
        assert_eq!(s, state);
        assert_eq!(h, hashes);
        // A state whose checksum disagrees with its hashes is not trusted.
        let mut bytes = std::fs::read(meta.path().join(STATE_FILE)).unwrap();
        let end = bytes.iter().position(|&b| b == b'\n').unwrap();
        let mut bad = state.clone();
        bad.checksum ^= 1;
        let mut json = serde_json::to_vec(&bad).unwrap();
        json.extend_from_slice(&bytes.split_off(end));
        std::fs::write(meta.path().join(STATE_FILE), &json).unwrap();
        assert!(meta.load().is_none());
        // The two-file layout of 0.1.0 still loads.
        std::fs::remove_file(meta.path().join(STATE_FILE)).unwrap();
        std::fs::write(meta.path().join(LEGACY_STATE_FILE), serde_json::to_vec_pretty(&state).unwrap()).unwrap();
        let raw: Vec<u8> = hashes.as_slice().iter().flat_map(|h| h.to_le_bytes()).collect();
        std::fs::write(meta.path().join(LEGACY_HASHES_FILE), raw).unwrap();
        assert_eq!(meta.load().unwrap(), (state, hashes));
    }
}

/// Size and modification time (ns) of a file, to notice it was written.
pub fn file_stamp(path: &Path) -> Option<(u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).ok()?;
    Some((m.len(), m.mtime() * 1_000_000_000 + m.mtime_nsec()))
}
