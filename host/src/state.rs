//! Local replication state of one database, kept in its meta directory
//! (`.<name>-sluice` beside the database, like Litestream's meta path):
//! where in the WAL capture stands, the TXID, the checksum, per-page
//! hashes, and the spool of segments not yet shipped everywhere. Beside
//! them, the pages' digests (`capture/digests.rs`), which only ever decide
//! how little a resume after a gap may ship.
//!
//! Crash safety: a segment is in the spool before the state that counts
//! it is written. The state is written in place into the older of two
//! slot files, each with a sequence number and a checksum, so a crash
//! mid-write leaves the other slot, the previous state, intact. Segments
//! beyond the recorded TXID are leftovers of a crash and are discarded on
//! start, then rebuilt from the WAL, so nothing is lost and nothing
//! shipped twice. Small segments are not fsynced: one a power failure
//! damaged is caught when it is uploaded (see
//! `capture::UNSYNCED_SPOOL_BYTES`).

use crate::checksum::PageHashes;
use crate::wal::WalPos;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use xxhash_rust::xxh3::xxh3_64;

/// The two slots the state alternates between. Rewriting a file in place
/// costs a write; a temp file renamed over the old one cost a new inode
/// and freeing the old one on every sync, which on ext4 without a journal
/// also slows every later file creation (it skips inodes freed in the
/// last 30 s, reading each one's deletion time).
const SLOT_FILES: [&str; 2] = ["state.0", "state.1"];
/// Opens a slot: magic, sequence number, payload length, xxh3 of the
/// payload (all little-endian u64 after the magic). The payload is one
/// line of JSON, then the page hashes (little-endian u64s).
const SLOT_MAGIC: &[u8; 8] = b"SLCSTAT1";
const SLOT_HEADER: usize = 32;
/// Files of the state layouts of earlier development builds: a single
/// file holding one payload, and before it the JSON and the hashes in two.
/// They are not read: with no slot beside them their presence is reported,
/// and `reset` removes them.
const EARLIER_LAYOUT_FILES: [&str; 3] = ["state", "state.json", "pages.hash"];
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
    /// Size and mtime (ns) of the database file at a moment when every
    /// commit SQLite had published was captured (no WAL epoch in
    /// progress, or resting: DESIGN.md decision 29). A later epoch whose
    /// salts cannot be tied to the last capture (a fresh wal-index picks
    /// random ones, a WAL restarted while sluice held no read lock) still
    /// continues the chain if the file was not touched since, because
    /// only a checkpoint writes it and frames leave the WAL only once
    /// checkpointed.
    #[serde(default)]
    pub db_stamp: Option<(u64, i64)>,
}

/// What `MetaDir::read_slots` found.
#[derive(Debug, Default)]
struct SlotScan {
    /// The intact slot with the highest sequence number, and its payload.
    newest: Option<(u64, Vec<u8>)>,
    /// Whether any slot file exists at all.
    any: bool,
    /// A slot file that opens with another layout's magic.
    foreign: Option<&'static str>,
}

/// The meta directory of one database.
#[derive(Debug, Clone)]
pub struct MetaDir {
    dir: PathBuf,
    slots: Arc<Mutex<Slots>>,
}

/// What saving needs to know about the slot files, learned on first use.
#[derive(Debug, Default)]
struct Slots {
    /// Highest sequence number in an intact slot (`None`: not read yet).
    seq: Option<u64>,
    /// Kept open: a save is then one write.
    files: [Option<File>; 2],
    lens: [u64; 2],
}

impl MetaDir {
    /// Litestream's default: `.<file name>-sluice` beside the database.
    pub fn default_for(db: &Path) -> PathBuf {
        let name = db.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        db.with_file_name(format!(".{name}-sluice"))
    }

    pub fn open(dir: PathBuf) -> io::Result<MetaDir> {
        fs::create_dir_all(dir.join(SPOOL_DIR))?;
        Ok(MetaDir { dir, slots: Arc::default() })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Close the slot files kept open for saving: a resting database
    /// holds no descriptor (the next save opens its slot again).
    pub fn close_files(&self) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.files = [None, None];
        }
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.join(SPOOL_DIR)
    }

    /// A scratch file path in the meta directory (same filesystem as the
    /// spool, so a rename into it is atomic).
    pub fn temp_path(&self, what: &str) -> PathBuf {
        self.dir.join(format!("{what}.{}.tmp", std::process::id()))
    }

    /// Load state and page hashes; `None` when absent, unreadable,
    /// inconsistent, or of another layout (the caller then starts over
    /// with a snapshot). All but a first run's absence are logged.
    pub fn load(&self) -> Option<(State, PageHashes)> {
        let scan = self.read_slots();
        if let Ok(mut slots) = self.slots.lock() {
            slots.seq = Some(scan.newest.as_ref().map_or(0, |(seq, _)| *seq));
        }
        let bytes = match scan.newest {
            Some((_, payload)) => payload,
            None => {
                if let Some(name) = scan.foreign {
                    tracing::warn!(
                        "local state {} is not in this build's layout; it is not read, and a new snapshot will be taken",
                        self.dir.join(name).display()
                    );
                } else if scan.any {
                    tracing::warn!(
                        "no intact local state in {} (crash mid-write?); a new snapshot will be taken",
                        self.dir.display()
                    );
                } else if let Some(name) = EARLIER_LAYOUT_FILES.into_iter().find(|f| self.dir.join(f).exists()) {
                    tracing::warn!(
                        "local state {} is in the layout of an earlier build, which this one does not read; a new snapshot will be taken",
                        self.dir.join(name).display()
                    );
                }
                return None;
            }
        };
        let (text, raw) = self.split_payload(bytes)?;
        self.decode(text, raw)
    }

    /// Read both slot files.
    fn read_slots(&self) -> SlotScan {
        let mut scan = SlotScan::default();
        for name in SLOT_FILES {
            let bytes = match fs::read(self.dir.join(name)) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => {
                    scan.any = true;
                    continue;
                }
            };
            scan.any = true;
            match parse_slot(&bytes) {
                Some((seq, payload)) if scan.newest.as_ref().is_none_or(|(s, _)| seq > *s) => {
                    scan.newest = Some((seq, payload.to_vec()))
                }
                Some(_) => {}
                // A torn first write can leave zeros (or nothing) where the
                // magic goes; other bytes there are another layout's.
                None if bytes.get(..8).is_some_and(|m| m != SLOT_MAGIC && m.iter().any(|&b| b != 0)) => {
                    scan.foreign = Some(name)
                }
                None => {}
            }
        }
        scan
    }

    /// The JSON line and the hashes after it.
    fn split_payload(&self, mut bytes: Vec<u8>) -> Option<(String, Vec<u8>)> {
        let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
            tracing::warn!("ignoring truncated local state in {}", self.dir.display());
            return None;
        };
        let raw = bytes.split_off(end + 1);
        Some((String::from_utf8(bytes).ok()?, raw))
    }

    fn decode(&self, text: String, raw: Vec<u8>) -> Option<(State, PageHashes)> {
        let state: State = match serde_json::from_str(&text) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("ignoring unreadable local state in {}: {e}", self.dir.display());
                return None;
            }
        };
        if state.version != STATE_VERSION {
            tracing::warn!(
                "local state in {} has layout version {}, this build reads {STATE_VERSION}; it is not read, and a new snapshot will be taken",
                self.dir.display(),
                state.version
            );
            return None;
        }
        let hashes: Vec<u64> =
            raw.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect();
        let hashes = PageHashes::from_vec(state.page_size, hashes);
        if hashes.checksum() != state.checksum || hashes.pages() != state.db_pages {
            tracing::warn!(
                "local page hashes in {} disagree with the recorded state (crash mid-write?); a new snapshot will be taken",
                self.dir.display()
            );
            return None;
        }
        Some((state, hashes))
    }

    /// Persist state and page hashes together, into the older slot.
    ///
    /// No fsync: losing the newest state to a power failure is safe. The
    /// next run either continues from an older state (its spool segments
    /// past it are discarded and rebuilt) or, if a replica already holds
    /// more, continues after the replica with a snapshot. Syncing three
    /// files per sync was most of the replicator's CPU time.
    pub fn save(&self, state: &State, hashes: &PageHashes) -> io::Result<()> {
        // The slot header goes in front once the payload is known. Compact
        // JSON has no newline of its own: the first one ends it.
        let mut bytes = vec![0u8; SLOT_HEADER];
        serde_json::to_writer(&mut bytes, &State { version: STATE_VERSION, ..state.clone() })
            .map_err(io::Error::other)?;
        bytes.reserve_exact(1 + hashes.as_slice().len() * 8);
        bytes.push(b'\n');
        for h in hashes.as_slice() {
            bytes.extend_from_slice(&h.to_le_bytes());
        }
        let mut slots =
            self.slots.lock().map_err(|_| io::Error::other("local state lock poisoned by an earlier panic"))?;
        let seq = match slots.seq {
            Some(seq) => seq,
            None => self.read_slots().newest.map_or(0, |(seq, _)| seq),
        } + 1;
        let payload_len = (bytes.len() - SLOT_HEADER) as u64;
        let digest = xxh3_64(&bytes[SLOT_HEADER..]);
        bytes[..8].copy_from_slice(SLOT_MAGIC);
        bytes[8..16].copy_from_slice(&seq.to_le_bytes());
        bytes[16..24].copy_from_slice(&payload_len.to_le_bytes());
        bytes[24..32].copy_from_slice(&digest.to_le_bytes());
        // The newest intact slot has the sequence number below ours, so
        // the slot of opposite parity is the one to overwrite.
        let i = (seq % 2) as usize;
        let file = match slots.files[i].take() {
            Some(f) => f,
            None => {
                let path = self.dir.join(SLOT_FILES[i]);
                let f = fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
                slots.lens[i] = f.metadata()?.len();
                f
            }
        };
        file.write_all_at(&bytes, 0)?;
        // The header bounds the payload, so a longer file's tail is
        // ignored: it is cut only once it is mostly waste (the database
        // shrank), not on every sync.
        let len = bytes.len() as u64;
        if slots.lens[i] > 2 * len {
            file.set_len(len)?;
            slots.lens[i] = len;
        } else {
            slots.lens[i] = slots.lens[i].max(len);
        }
        slots.files[i] = Some(file);
        slots.seq = Some(seq);
        Ok(())
    }

    /// Forget everything (`sluice reset`): the next sync snapshots.
    /// The files `reset` would remove from the meta directory `dir`.
    pub fn reset_files(dir: &Path) -> Vec<PathBuf> {
        SLOT_FILES.into_iter().chain(EARLIER_LAYOUT_FILES).map(|f| dir.join(f)).filter(|p| p.exists()).collect()
    }

    pub fn reset(&self) -> io::Result<()> {
        if let Ok(mut slots) = self.slots.lock() {
            *slots = Slots::default();
        }
        for f in SLOT_FILES.into_iter().chain(EARLIER_LAYOUT_FILES) {
            remove_if_exists(&self.dir.join(f))?;
        }
        Ok(())
    }

    /// Small per-replica state (`<name>.json`), see [`Record`].
    pub fn record(&self, name: &str) -> Record {
        Record { path: self.dir.join(format!("{name}.json")) }
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
}

impl Record {
    pub fn load<T: for<'de> Deserialize<'de>>(&self) -> Option<T> {
        let text = fs::read_to_string(&self.path).ok()?;
        serde_json::from_str(text.trim_end_matches('\0')).ok()
    }

    pub fn save<T: Serialize>(&mut self, value: &T) -> io::Result<()> {
        let mut bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
        if bytes.len() >= RECORD_BYTES {
            return Err(io::Error::other(format!("record {} is over {RECORD_BYTES} bytes", self.path.display())));
        }
        bytes.resize(RECORD_BYTES - 1, b' ');
        bytes.push(b'\n');
        // Opened for each save, not kept: an idle replica of a resting
        // database then holds no descriptor (decision 29), and a save
        // comes with an upload, which costs far more than an open.
        let file = fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&self.path)?;
        if file.metadata()?.len() != RECORD_BYTES as u64 {
            // An older, longer layout must not leave a tail behind.
            file.set_len(RECORD_BYTES as u64)?;
        }
        file.write_all_at(&bytes, 0)
    }
}

impl State {
    pub fn new(page_size: u32) -> State {
        State {
            version: STATE_VERSION,
            page_size,
            txid: 0,
            db_pages: 0,
            checksum: 0,
            timestamp_ms: 0,
            wal: None,
            next_salt1: None,
            db_stamp: None,
        }
    }
}

/// The payload of an intact slot, with its sequence number.
fn parse_slot(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let header = bytes.get(..SLOT_HEADER)?;
    let word = |i: usize| header.get(i..i + 8).and_then(|w| w.try_into().ok()).map(u64::from_le_bytes);
    if &header[..8] != SLOT_MAGIC {
        return None;
    }
    let (seq, len, digest) = (word(8)?, word(16)?, word(24)?);
    let payload = bytes.get(SLOT_HEADER..SLOT_HEADER.checked_add(usize::try_from(len).ok()?)?)?;
    (xxh3_64(payload) == digest).then_some((seq, payload))
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
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

    fn sample(txid: u64) -> (State, PageHashes) {
        let mut hashes = PageHashes::new(4096);
        hashes.set(1, page_hash(1, &[1; 4096]));
        hashes.set(2, page_hash(2, &[txid as u8; 4096]));
        let mut state = State::new(4096);
        state.txid = txid;
        state.db_pages = 2;
        state.checksum = hashes.checksum();
        (state, hashes)
    }

    #[test]
    fn save_load_and_detect_inconsistency() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaDir::open(dir.path().join("m")).unwrap();
        assert!(meta.load().is_none());
        let (state, hashes) = sample(5);
        meta.save(&state, &hashes).unwrap();
        assert_eq!(meta.load().unwrap(), (state.clone(), hashes.clone()));
        // A state whose checksum disagrees with its hashes is not trusted.
        let mut bad = state.clone();
        bad.checksum ^= 1;
        meta.save(&bad, &hashes).unwrap();
        assert!(meta.load().is_none());
        // Nor is it resurrected by the next save landing in the other slot.
        let (state, hashes) = sample(6);
        meta.save(&state, &hashes).unwrap();
        assert_eq!(MetaDir::open(meta.path().to_path_buf()).unwrap().load().unwrap(), (state, hashes));
    }

    #[test]
    fn a_torn_save_leaves_the_previous_state() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaDir::open(dir.path().join("m")).unwrap();
        for txid in 1..=4 {
            let (state, hashes) = sample(txid);
            meta.save(&state, &hashes).unwrap();
        }
        // Saves alternate, so the two slots hold the last two states.
        let newest = (0..2)
            .map(|i| std::fs::read(meta.path().join(SLOT_FILES[i])).unwrap())
            .max_by_key(|b| parse_slot(b).unwrap().0)
            .unwrap();
        for cut in [SLOT_HEADER / 2, SLOT_HEADER + 10, newest.len() - 1] {
            // A crash mid-write: the newest slot holds a prefix of itself
            // over the tail of what it held before.
            let i = (0..2).find(|&i| std::fs::read(meta.path().join(SLOT_FILES[i])).unwrap() == newest).unwrap();
            let mut torn = newest.clone();
            torn[cut..].iter_mut().for_each(|b| *b ^= 0x5a);
            std::fs::write(meta.path().join(SLOT_FILES[i]), &torn).unwrap();
            let reopened = MetaDir::open(meta.path().to_path_buf()).unwrap();
            assert_eq!(reopened.load().unwrap(), sample(3), "cut at {cut}");
            std::fs::write(meta.path().join(SLOT_FILES[i]), &newest).unwrap();
        }
        // After a restart, saving goes on past the newest intact slot.
        let reopened = MetaDir::open(meta.path().to_path_buf()).unwrap();
        let (state, hashes) = sample(5);
        reopened.save(&state, &hashes).unwrap();
        assert_eq!(MetaDir::open(meta.path().to_path_buf()).unwrap().load().unwrap(), (state, hashes));
    }

    #[test]
    fn other_layouts_are_reported_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaDir::open(dir.path().join("m")).unwrap();
        let (state, hashes) = sample(7);
        let raw: Vec<u8> = hashes.as_slice().iter().flat_map(|h| h.to_le_bytes()).collect();
        // The single file of earlier builds (a slot's payload), and the two
        // files before that.
        let mut single = serde_json::to_vec(&state).unwrap();
        single.push(b'\n');
        single.extend_from_slice(&raw);
        let layouts = [
            vec![("state", single)],
            vec![("state.json", serde_json::to_vec_pretty(&state).unwrap()), ("pages.hash", raw)],
        ];
        for files in layouts {
            for (name, bytes) in &files {
                std::fs::write(meta.path().join(name), bytes).unwrap();
            }
            let (loaded, log) = crate::logging::capture(|| meta.load());
            assert_eq!(loaded, None);
            let reported = meta.path().join(files[0].0);
            assert!(
                log.contains(&format!("local state {} is in the layout of an earlier build", reported.display())),
                "{log}"
            );
            // The first save starts the current layout, which is read from then on.
            meta.save(&state, &hashes).unwrap();
            let (loaded, log) = crate::logging::capture(|| meta.load());
            assert_eq!(loaded, Some((state.clone(), hashes.clone())));
            assert!(!log.contains("WARN"), "{log}");
            // Reset forgets the earlier files too.
            meta.reset().unwrap();
            assert!(EARLIER_LAYOUT_FILES.iter().chain(&SLOT_FILES).all(|f| !meta.path().join(f).exists()));
        }
        // A slot of another layout version, and a slot file of another
        // layout altogether, are not read either, and say so.
        meta.save(&state, &hashes).unwrap();
        let slot = SLOT_FILES.into_iter().map(|f| meta.path().join(f)).find(|p| p.exists()).unwrap();
        let mut bytes = std::fs::read(&slot).unwrap();
        let json_end = SLOT_HEADER + bytes[SLOT_HEADER..].iter().position(|&b| b == b'\n').unwrap();
        let text = String::from_utf8(bytes[SLOT_HEADER..json_end].to_vec())
            .unwrap()
            .replace(&format!("\"version\":{STATE_VERSION}"), &format!("\"version\":{}", STATE_VERSION + 1));
        bytes.splice(SLOT_HEADER..json_end, text.into_bytes());
        let digest = xxh3_64(&bytes[SLOT_HEADER..]);
        bytes[24..32].copy_from_slice(&digest.to_le_bytes());
        std::fs::write(&slot, &bytes).unwrap();
        let (loaded, log) = crate::logging::capture(|| MetaDir::open(meta.path().to_path_buf()).unwrap().load());
        assert_eq!(loaded, None);
        assert!(
            log.contains(&format!("has layout version {}, this build reads {STATE_VERSION}", STATE_VERSION + 1)),
            "{log}"
        );
        bytes[..8].copy_from_slice(b"SLCSTAT2");
        std::fs::write(&slot, &bytes).unwrap();
        let (loaded, log) = crate::logging::capture(|| MetaDir::open(meta.path().to_path_buf()).unwrap().load());
        assert_eq!(loaded, None);
        assert!(log.contains(&format!("local state {} is not in this build's layout", slot.display())), "{log}");
        // Zeros where the magic goes are a torn first write, not a layout.
        bytes[..8].fill(0);
        std::fs::write(&slot, &bytes).unwrap();
        let (loaded, log) = crate::logging::capture(|| MetaDir::open(meta.path().to_path_buf()).unwrap().load());
        assert_eq!(loaded, None);
        assert!(log.contains("crash mid-write?"), "{log}");
    }
}
