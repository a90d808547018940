//! WAL → segment: each sync reads the newly committed frames of one
//! database and writes them as a level-0 segment into the local spool, or
//! writes a snapshot when continuity is lost or a replica asks for one.
//!
//! Continuity: within one WAL epoch the frame chain must continue from
//! where the last capture stopped; a new epoch may only follow an epoch we
//! captured completely, which our read transaction guarantees while this
//! process holds it (SQLite never checkpoints past a reader's view, and a
//! restart needs everything checkpointed). Anything else — sluice was down
//! while the WAL was reset, the file was replaced — is a gap, bridged by
//! the pages that differ from the replica's or by a snapshot
//! (`capture/resume.rs`).

use crate::checksum::PageHashes;
use crate::db::{Db, DbError};
use crate::fsutil::file_stamp;
use crate::segment::SegmentName;
use crate::segment::writer::Compressor;
use crate::state::{MetaDir, State, WalMark};
use crate::wal::{Scan, WalHeader, WalPos};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Checkpoint thresholds (Litestream's names and defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureConfig {
    /// PASSIVE checkpoint once the WAL holds this many frames.
    pub min_checkpoint_page_count: u32,
    /// TRUNCATE checkpoint (blocking writers briefly) past this many.
    pub truncate_page_n: u32,
    /// PASSIVE checkpoint at least this often while the WAL has frames.
    pub checkpoint_interval: Duration,
    pub busy_timeout: Duration,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            min_checkpoint_page_count: 1000,
            truncate_page_n: 121_359,
            checkpoint_interval: Duration::from_secs(60),
            busy_timeout: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The WAL was reset or truncated while a capture read frames from it,
    /// so what was read may mix two logs. Nothing was recorded; `sync`
    /// redoes the capture (see DESIGN.md, decision 9).
    #[error("{path}: the WAL was reset while sluice was reading it")]
    WalMoved { path: PathBuf },
    /// The meta directory's filesystem is full, or sluice would have
    /// written into the room it leaves the application there
    /// (`spool::DISK_RESERVE_PERCENT`). Nothing was recorded and the
    /// partial file is gone; capture retries by itself.
    #[error(
        "{path}: the disk of sluice's meta directory is full ({source}); nothing was recorded and the partial \
         file was removed. Free space there or point meta-dir at a larger filesystem: capture resumes by itself \
         (from the pages that changed if the WAL was checkpointed meanwhile)"
    )]
    DiskFull { path: PathBuf, source: io::Error },
}

impl CaptureError {
    /// Whether retrying soon cannot help: the same error would come back
    /// until an operator acts (see `DiskFull`).
    pub fn needs_operator(&self) -> bool {
        matches!(self, CaptureError::DiskFull { .. })
    }
}

/// An I/O error at `path`, with a full disk told apart: it is the
/// operator's to fix, and it says so.
fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CaptureError + '_ {
    move |source| match source.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            CaptureError::DiskFull { path: path.to_path_buf(), source }
        }
        _ => CaptureError::Io { path: path.to_path_buf(), source },
    }
}

/// A segment waiting in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolEntry {
    pub name: SegmentName,
    pub path: PathBuf,
    pub size: u64,
    pub timestamp_ms: i64,
}

/// A level-0 segment small enough to be built in memory, with its bytes:
/// a replica that is caught up uploads it from here instead of reading the
/// spool back (a trip to the blocking pool and four system calls a sync).
#[derive(Clone)]
pub struct Fresh {
    pub entry: SpoolEntry,
    pub bytes: Arc<[u8]>,
}

impl std::fmt::Debug for Fresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fresh({}, {} bytes)", self.entry.name, self.bytes.len())
    }
}

/// What capture has recorded, as the replicas see it: segments up to
/// `txid` may ship, and the newest level-0 one may be in memory.
#[derive(Debug, Clone, Default)]
pub struct Durable {
    pub txid: u64,
    pub fresh: Option<Fresh>,
}

/// What one sync produced.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub segments: Vec<SpoolEntry>,
    /// This sync's level-0 segment, if it was built in memory.
    pub fresh: Option<Fresh>,
    pub transactions: u64,
    /// WAL bytes (frames) captured.
    pub wal_bytes: u64,
    /// Continuity was lost: the segments bridge the gap (pages that
    /// differ from the replica's, or a snapshot restarting the chain).
    pub gap: Option<String>,
    /// The WAL ends in frames of a transaction not committed yet.
    pub in_flight: bool,
}

/// Capture state of one database.
pub struct Capturer {
    db: Db,
    meta: MetaDir,
    state: State,
    hashes: PageHashes,
    config: CaptureConfig,
    /// Why continuity was lost, if it was: the next sync bridges the gap
    /// (`capture/resume.rs`).
    gap: Option<String>,
    /// The state is the base of the replica's chain: what a replica holds
    /// at the state's TXID is what the state's page hashes describe, so a
    /// gap can be bridged by the pages that differ. False until the state
    /// was loaded or a snapshot written, after `distrust`, and after a
    /// digest write failed (until a snapshot rewrote them all).
    resumable: bool,
    /// Every replica was listed and none is ahead of the state (see
    /// `replicas_known`): what makes `resumable` safe to act on.
    replicas_known: bool,
    /// Where each captured page's digest goes (`capture/digests.rs`).
    digests: digests::Writer,
    /// A failed digest write was reported (once a process is enough).
    digests_failed: bool,
    inode: (u64, u64),
    last_checkpoint: Instant,
    /// No TRUNCATE attempt before this (see `TRUNCATE_RETRY`).
    truncate_retry_at: Instant,
    /// The last sync in this process captured everything up to our read
    /// transaction's view, and that transaction has been held since. Then
    /// no checkpoint can have copied an uncaptured frame (SQLite never
    /// copies past a reader's view), so any WAL restart follows a wholly
    /// captured epoch.
    live: bool,
    /// The level-0 segments' compressor, kept between syncs.
    compressor: Option<Compressor>,
    /// The last sync found nothing new, so the read transaction sees the
    /// captured state exactly (what `validate` needs).
    view_is_state: bool,
    /// Run once between a capture's scan and its reading of the frames:
    /// where tests act as a concurrent writer.
    #[cfg(test)]
    after_scan: Option<Box<dyn FnOnce() + Send>>,
}

/// How long a PASSIVE checkpoint waits for the write lock. Briefly: without
/// the lock the checkpoint is still safe (our read transaction stops it at
/// captured frames), it only cannot guarantee the WAL restarts.
const PASSIVE_LOCK_WAIT: Duration = Duration::from_millis(20);
/// Captures `sync` makes when the WAL is reset under each one. A reset
/// needs the previous log wholly checkpointed, and our read transaction,
/// renewed by each attempt, holds the next log back from that unless it
/// too was wholly copied before the attempt began: one retry nearly always
/// suffices, and a sync that still fails is retried by the next look.
const WAL_MOVED_ATTEMPTS: u32 = 3;
fn file_id(path: &Path) -> io::Result<(u64, u64)> {
    let m = fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

impl Capturer {
    /// Open the database and the local state; decide whether the chain
    /// can continue or must restart with a snapshot.
    pub fn open(db_path: &Path, meta_dir: PathBuf, config: CaptureConfig) -> Result<Capturer, CaptureError> {
        let db = Db::open(db_path, config.busy_timeout)?;
        let meta = MetaDir::open(meta_dir.clone()).map_err(io_err(&meta_dir))?;
        let inode = file_id(db_path).map_err(io_err(db_path))?;
        let (page_size, _) = db.page_info()?;
        let loaded = meta.load();
        let resumable = loaded.is_some();
        let (state, hashes, gap) = match loaded {
            None => (
                State::new(page_size),
                PageHashes::new(page_size),
                Some("no local replication state (first run)".to_string()),
            ),
            Some((state, hashes)) => {
                let gap = startup_gap(&db, &state).map_err(io_err(db_path))?;
                (state, hashes, gap)
            }
        };
        remove_stale_temps(meta.path());
        let digests = digests::Writer::new(meta.path());
        let mut capturer = Capturer {
            db,
            meta,
            state,
            hashes,
            config,
            gap,
            resumable,
            replicas_known: false,
            digests,
            digests_failed: false,
            inode,
            last_checkpoint: Instant::now(),
            truncate_retry_at: Instant::now(),
            live: false,
            compressor: None,
            view_is_state: false,
            #[cfg(test)]
            after_scan: None,
        };
        capturer.discard_unrecorded_spool()?;
        Ok(capturer)
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn meta(&self) -> &MetaDir {
        &self.meta
    }

    pub fn db_path(&self) -> &Path {
        self.db.path()
    }

    /// Continuity was lost and the local state could bridge the gap, once
    /// every replica was listed (see `replicas_known`).
    pub fn resume_pending(&self) -> bool {
        self.gap.is_some() && self.resumable && self.state.txid > 0
    }

    /// Spool segments beyond the recorded TXID are leftovers of a crash
    /// between writing a segment and recording it: drop them.
    fn discard_unrecorded_spool(&mut self) -> Result<(), CaptureError> {
        for entry in list_spool(&self.meta.spool()).map_err(io_err(&self.meta.spool()))? {
            if entry.name.max_txid > self.state.txid {
                fs::remove_file(&entry.path).map_err(io_err(&entry.path))?;
            }
        }
        Ok(())
    }

    /// Capture whatever was committed since the last sync. With
    /// `snapshot` (or after a gap) also write a snapshot at the new TXID.
    pub fn sync(&mut self, snapshot: bool) -> Result<SyncReport, CaptureError> {
        let mut attempt = 1;
        loop {
            match self.capture(snapshot, false) {
                Err(CaptureError::WalMoved { .. }) if attempt < WAL_MOVED_ATTEMPTS => attempt += 1,
                Err(e) if e.needs_operator() => {
                    // Retried only after a back-off: holding our read view
                    // until then would keep the application's checkpoints
                    // from emptying the WAL, which grows on what is often
                    // the same full disk. Let go; the next capture decides
                    // continuity as after a restart (decision 4).
                    let _ = self.db.release_read_locks();
                    return Err(e);
                }
                done => return done,
            }
        }
    }

    /// `Err(WalMoved)` unless the WAL `wal` was opened as still begins with
    /// the same header: checked after the last frame a segment takes from
    /// it is read, before the segment is recorded.
    fn wal_unmoved(&self, h: &WalHeader, wal: &File) -> Result<(), CaptureError> {
        let path = self.db.wal_path();
        match h.still_heads(wal).map_err(io_err(&path))? {
            true => Ok(()),
            false => Err(CaptureError::WalMoved { path }),
        }
    }

    /// `sync`, but with `defer_gap` a loss of continuity is only recorded:
    /// the snapshot it needs is written by the next plain sync, never
    /// under the write lock.
    fn capture(&mut self, snapshot: bool, defer_gap: bool) -> Result<SyncReport, CaptureError> {
        let path = self.db.path().to_path_buf();
        // Resting (capture/rest.rs): open again. `live` is false, so
        // continuity is proved as after a restart.
        self.db.wake()?;
        if file_id(&path).map_err(io_err(&path))? != self.inode {
            // Replaced underneath us (a restore, a copy): start over. Until
            // the reopen succeeds no inode matches, so a failed one is
            // retried by the next sync.
            self.inode = (0, 0);
            self.db.reopen()?;
            self.inode = file_id(&path).map_err(io_err(&path))?;
            self.gap = Some("the database file was replaced".into());
        }
        self.db.refresh_read_lock()?;
        // Our read view moved: until this capture completes, a checkpoint
        // may copy frames we have not captured yet.
        let was_live = std::mem::replace(&mut self.live, false);
        self.view_is_state = false;
        let wal_path = self.db.wal_path();
        let wal = self.db.open_wal().map_err(io_err(&wal_path))?;
        let from = self.scan_from(wal.as_ref(), was_live)?;
        let scan = match (&wal, from) {
            (Some((h, f)), Some(pos)) => h.scan(f, pos, self.published_limit(h)).map_err(io_err(&wal_path))?,
            _ => Scan::default(),
        };
        #[cfg(test)]
        if let Some(hook) = self.after_scan.take() {
            hook();
        }
        let mut report =
            SyncReport { transactions: scan.transactions, in_flight: scan.uncommitted > 0, ..SyncReport::default() };
        if let (Some((h, _)), Some(end), Some(start)) = (&wal, scan.end, from) {
            report.wal_bytes = (end.frames - start.frames) as u64 * h.frame_size();
        }
        if defer_gap && self.gap.is_some() {
            return Ok(report);
        }
        self.write_segments(&scan, wal.as_ref(), snapshot, &mut report)?;
        if let Some((h, _)) = &wal {
            let pos = scan.end.or(from).unwrap_or_else(|| h.start());
            self.state.wal = Some(WalMark { pos });
            if scan.end.is_some() {
                // The stamp vouched for a moment this capture has moved
                // past: it proves nothing about the new frames' fate.
                self.state.db_stamp = None;
            }
        }
        self.flush_digests();
        self.meta.save(&self.state, &self.hashes).map_err(io_err(self.meta.path()))?;
        self.live = true;
        self.view_is_state = report.transactions == 0 && report.segments.is_empty();
        Ok(report)
    }

    /// Where this sync scans the WAL `wal` from (`None`: there is no WAL),
    /// recording a gap if the chain does not hold.
    fn scan_from(&mut self, wal: Option<&(WalHeader, File)>, was_live: bool) -> Result<Option<WalPos>, CaptureError> {
        Ok(match (wal, self.gap.is_some()) {
            (Some((h, _)), true) => Some(h.start()),
            (Some((h, f)), false) => match self.continuity(h, f, was_live)? {
                Ok(pos) => Some(pos),
                Err(why) => {
                    self.gap = Some(why);
                    Some(h.start())
                }
            },
            (None, _) => {
                if self.state.wal.is_none() && !was_live && self.gap.is_none() && !self.untouched() {
                    // Nothing was in the WAL at the last capture, but our
                    // read lock was let go since (resting, a failed sync):
                    // a checkpoint may have copied commits we never saw
                    // and deleted the WAL (the application's last
                    // connection closing).
                    self.gap = Some("the database file changed while sluice held no read lock on it".into());
                }
                if let Some(mark) = self.state.wal.take() {
                    if was_live {
                        // Truncated after a complete capture (decision 4).
                        self.state.next_salt1 = Some(mark.pos.salt.0.wrapping_add(1));
                        self.state.db_stamp = file_stamp(self.db.path());
                    } else if self.gap.is_none() && !self.untouched() {
                        // A failed sync had moved our read view past what it
                        // captured; the frames in between may have been
                        // checkpointed and the WAL emptied since.
                        self.gap = Some(
                            "the WAL was emptied before sluice had captured all of it (the previous sync failed)"
                                .into(),
                        );
                    }
                }
                None
            }
        })
    }

    /// The segments of this sync, recorded in the state: a snapshot after a
    /// gap; else a level-0 segment of `scan`'s frames and, asked for
    /// (`snapshot`), a snapshot at the new state.
    fn write_segments(
        &mut self,
        scan: &Scan,
        wal: Option<&(WalHeader, File)>,
        snapshot: bool,
        report: &mut SyncReport,
    ) -> Result<(), CaptureError> {
        // The gap stays recorded until it is bridged: a sync that fails
        // leaves the next one a gap to fill, never a chain to extend.
        if let Some(why) = self.gap.clone() {
            let entry = self.bridge_gap(&why, scan, wal)?;
            self.gap = None;
            report.gap = Some(why);
            let was_snapshot = entry.as_ref().is_some_and(|e| e.name.is_snapshot());
            report.segments.extend(entry);
            if snapshot && !was_snapshot {
                // A resume is no snapshot: one asked for still comes.
                report.segments.push(self.write_snapshot(scan, wal, false)?);
            }
            return Ok(());
        }
        if scan.end.is_some() {
            let wal_path = self.db.wal_path();
            let (h, f) = wal
                .ok_or_else(|| CaptureError::Io { path: wal_path, source: io::Error::other("frames without a WAL") })?;
            let (entry, bytes) = self.write_l0(scan, h, f)?;
            report.fresh = bytes.map(|bytes| Fresh { entry: entry.clone(), bytes });
            report.segments.push(entry);
        }
        if snapshot && self.state.txid > 0 {
            // Pages of this sync's frames are already in the state; the
            // snapshot reads the rest at the read transaction's view.
            let entry = self.write_snapshot(scan, wal, false)?;
            report.segments.push(entry);
        }
        Ok(())
    }

    /// How many frames of the WAL with header `h` SQLite has published as
    /// committed: capture takes nothing past them (see `db::Published`).
    /// Read after the WAL was opened, so every published frame is in the
    /// file. Salts that differ mean the WAL is between epochs: nothing of
    /// it is taken until SQLite publishes it.
    fn published_limit(&self, h: &WalHeader) -> Option<u32> {
        match self.db.published() {
            Some(p) if p.salt == h.salt => Some(p.max_frame),
            Some(_) => Some(0),
            None => None,
        }
    }

    /// `Ok(pos)` to continue from, or `Err(reason)` for a gap.
    fn continuity(&self, h: &WalHeader, file: &File, live: bool) -> Result<Result<WalPos, String>, CaptureError> {
        match self.state.wal {
            Some(mark) if mark.pos.salt == h.salt => {
                let wal_path = self.db.wal_path();
                if h.continues(file, mark.pos).map_err(io_err(&wal_path))? {
                    Ok(Ok(mark.pos))
                } else {
                    Ok(Err("the WAL was rewritten since the last capture".into()))
                }
            }
            // A new epoch. Only a sync that completed since we took our
            // read lock proves the previous one was wholly captured (its
            // salts say nothing: SQLite picks random ones after some
            // TRUNCATEs).
            Some(_) if live || self.untouched() => Ok(Ok(h.start())),
            Some(_) => Ok(Err("the WAL was reset before sluice had captured all of it (sluice was starting, or the previous sync failed)".into())),
            None => {
                if live || self.state.next_salt1 == Some(h.salt.0) || self.untouched() {
                    Ok(Ok(h.start()))
                } else {
                    Ok(Err("a new WAL appeared that cannot be tied to the last capture".into()))
                }
            }
        }
    }

    /// The database file is as it was when the state's `db_stamp` was
    /// taken, a moment when every published commit was captured: no
    /// checkpoint has run since, so no frame left the WAL uncaptured.
    fn untouched(&self) -> bool {
        untouched(self.db.path(), &self.state)
    }

    /// Write the digests gathered by this sync; a failure is reported once
    /// and costs nothing but pages shipped on some later resume.
    fn flush_digests(&mut self) {
        self.digests.flush();
        if let Some((path, e)) = self.digests.take_error() {
            // Stale entries are caught by their page hashes, but those can
            // be made to collide: no resume trusts a file that missed a
            // write until a snapshot has rewritten every entry.
            self.resumable = false;
            if !std::mem::replace(&mut self.digests_failed, true) {
                tracing::warn!(database = %self.db.path().display(), "cannot write page digests to {}: {e}; replication goes on, but a gap before the next snapshot takes a snapshot", path.display());
            }
        }
    }

    /// Make the next TXID follow `txid` if a replica already holds it; the
    /// chain then restarts with a snapshot (our state is not its base).
    pub fn continue_after(&mut self, txid: u64) {
        if txid > self.state.txid {
            tracing::warn!(database = %self.db.path().display(), "a replica holds TXID {txid:016x}, past the local state's {:016x}; continuing after it with a snapshot", self.state.txid);
            self.state.txid = txid;
            self.distrust("a replica is ahead of the local state");
        }
    }
}

/// On start, the chain continues only if the WAL still holds exactly what
/// we last captured; anything could have happened while we were down.
fn startup_gap(db: &Db, state: &State) -> io::Result<Option<String>> {
    Ok(match (db.open_wal()?, state.wal) {
        (Some((h, file)), Some(mark)) if h.salt == mark.pos.salt => {
            if h.continues(&file, mark.pos)? {
                None
            } else {
                Some("the WAL was rewritten while sluice was not running".into())
            }
        }
        // Untouched database file: no checkpoint ran, so any WAL holds
        // every change since, from its first frame (a WAL that restarted
        // after the recorded one had been copied whole, as resting leaves
        // it). A changed file means changes were checkpointed while we
        // were away.
        _ if untouched(db.path(), state) => None,
        _ => Some("the WAL changed in ways that cannot be followed while sluice was not running".into()),
    })
}

/// See `Capturer::untouched`.
fn untouched(db: &Path, state: &State) -> bool {
    state.db_stamp.is_some_and(crate::fsutil::fine_grained) && state.db_stamp == file_stamp(db)
}

mod checkpoint;
mod digests;
mod rest;
mod resume;
mod segments;
mod spool;
mod validate;
pub use segments::UNSYNCED_SPOOL_BYTES;
use spool::remove_stale_temps;
pub use spool::{list_spool, spool_path};
pub use validate::Validation;

#[cfg(test)]
mod tests;
