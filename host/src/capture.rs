//! WAL → segment: each sync reads the newly committed frames of one
//! database and writes them as a level-0 segment into the local spool, or
//! writes a snapshot when continuity is lost or a replica asks for one.
//!
//! Continuity: within one WAL epoch the frame chain must continue from
//! where the last capture stopped; a new epoch may only follow an epoch we
//! captured completely, which our read transaction guarantees while this
//! process holds it (SQLite never checkpoints past a reader's view, and a
//! restart needs everything checkpointed). Anything else — sluice was down
//! while the WAL was reset, the file was replaced — is a gap, and a gap
//! means a snapshot.

use crate::checksum::{PageHashes, page_hash};
use crate::clock::now_ms;
use crate::db::{CheckpointMode, Db, DbError};
use crate::segment::writer::{Compressor, LEVEL0_ZSTD_LEVEL, new_compressor};
use crate::segment::{Header, SNAPSHOT_LEVEL, SegmentName, SegmentWriter};
use crate::state::{MetaDir, State, WalMark, file_stamp, sync_dir};
use crate::wal::{Scan, WalHeader, WalPos};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Checkpoint thresholds (Litestream's names and defaults).
#[derive(Debug, Clone)]
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
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CaptureError + '_ {
    move |source| CaptureError::Io { path: path.to_path_buf(), source }
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
    /// Continuity was lost and a snapshot restarted the chain.
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
    /// Why the next sync must snapshot, if it must.
    gap: Option<String>,
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
/// After a TRUNCATE could not get the write lock within the busy timeout,
/// the pause before the next attempt, so a never-idle writer does not cost
/// every sync a whole busy timeout.
const TRUNCATE_RETRY: Duration = Duration::from_secs(10);
/// Captures `sync` makes when the WAL is reset under each one. A reset
/// needs the previous log wholly checkpointed, and our read transaction,
/// renewed by each attempt, holds the next log back from that unless it
/// too was wholly copied before the attempt began: one retry nearly always
/// suffices, and a sync that still fails is retried by the next look.
const WAL_MOVED_ATTEMPTS: u32 = 3;
/// Write buffer of a segment being built: holds a typical level-0
/// segment whole; a snapshot's compressed blocks (hundreds of KiB) are
/// larger and go straight through.
const SEGMENT_WRITE_BUFFER: usize = 64 << 10;

/// Spool segments up to this size are not fsynced. Syncing a file and its
/// directory was the largest single cost of a steady sync, and the spool
/// does not need it: against a crash of the process the page cache keeps
/// the file, and after a power failure a segment that came back truncated
/// or garbled fails the check every upload of one this small makes
/// (`replica::client`), is dropped, and the replica catches up with a
/// snapshot. Larger segments (snapshots, mostly) are streamed up without
/// such a check, so they are synced.
pub const UNSYNCED_SPOOL_BYTES: u64 = 1 << 20;

/// Level-0 segments of up to this many bytes of pages are built in
/// memory, written with one system call and handed to the replicas as they
/// are (see `Fresh`). A steady sync's is tens of KiB; the bound keeps the
/// copy the replicas may hold to one MiB per database.
const IN_MEMORY_L0_BYTES: usize = 1 << 20;
const _: () = assert!(IN_MEMORY_L0_BYTES as u64 <= UNSYNCED_SPOOL_BYTES);

/// A segment being written to the meta directory.
type SpoolFile = io::BufWriter<File>;

/// A level-0 segment in the spool and, if it was built in memory, its bytes.
type SpooledL0 = (SpoolEntry, Option<Arc<[u8]>>);

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
        let (state, hashes, gap) = match meta.load() {
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
        let mut capturer = Capturer {
            db,
            meta,
            state,
            hashes,
            config,
            gap,
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
        let mut report = SyncReport::default();

        // Where to scan from, and whether the chain holds.
        let from = match (&wal, self.gap.is_some()) {
            (Some((h, _)), true) => Some(h.start()),
            (Some((h, f)), false) => match self.continuity(h, f, was_live)? {
                Ok(pos) => Some(pos),
                Err(why) => {
                    self.gap = Some(why);
                    Some(h.start())
                }
            },
            (None, _) => {
                if let Some(mark) = self.state.wal.take() {
                    if was_live {
                        // Truncated after a complete capture (decision 4).
                        self.state.next_salt1 = Some(mark.pos.salt.0.wrapping_add(1));
                        self.state.db_stamp = file_stamp(&path);
                    } else if self.gap.is_none() {
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
        };
        let scan = match (&wal, from) {
            (Some((h, f)), Some(pos)) => h.scan(f, pos, self.published_limit(h)).map_err(io_err(&wal_path))?,
            _ => Scan::default(),
        };
        #[cfg(test)]
        if let Some(hook) = self.after_scan.take() {
            hook();
        }
        report.transactions = scan.transactions;
        report.in_flight = scan.uncommitted > 0;
        if let (Some((h, _)), Some(end), Some(start)) = (&wal, scan.end, from) {
            report.wal_bytes = (end.frames - start.frames) as u64 * h.frame_size();
        }

        if defer_gap && self.gap.is_some() {
            return Ok(report);
        }
        // The gap stays recorded until its snapshot is: a snapshot that
        // fails leaves the next sync a gap to fill, never a chain to extend.
        if let Some(why) = self.gap.clone() {
            if self.state.txid == 0 {
                tracing::info!(database = %path.display(), "first sync: taking the initial snapshot");
            } else {
                tracing::warn!(database = %path.display(), "replication chain restarts with a snapshot: {why}");
            }
            let entry = self.write_snapshot(&scan, wal.as_ref(), true)?;
            self.gap = None;
            report.gap = Some(why);
            report.segments.push(entry);
        } else {
            if scan.end.is_some() {
                let (h, f) = wal.as_ref().ok_or_else(|| CaptureError::Io {
                    path: wal_path.clone(),
                    source: io::Error::other("frames without a WAL"),
                })?;
                let (entry, bytes) = self.write_l0(&scan, h, f)?;
                report.fresh = bytes.map(|bytes| Fresh { entry: entry.clone(), bytes });
                report.segments.push(entry);
            }
            if snapshot && self.state.txid > 0 {
                // Pages of this sync's frames are already in the state; the
                // snapshot reads the rest at the read transaction's view.
                let entry = self.write_snapshot(&scan, wal.as_ref(), false)?;
                report.segments.push(entry);
            }
        }
        if let Some((h, _)) = &wal {
            let pos = scan.end.or(from).unwrap_or_else(|| h.start());
            self.state.wal = Some(WalMark { pos });
        }
        self.meta.save(&self.state, &self.hashes).map_err(io_err(self.meta.path()))?;
        self.live = true;
        self.view_is_state = report.transactions == 0 && report.segments.is_empty();
        Ok(report)
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
            Some(_) if live => Ok(Ok(h.start())),
            Some(_) => Ok(Err("the WAL was reset before sluice had captured all of it (sluice was starting, or the previous sync failed)".into())),
            None => {
                let untouched = self.state.db_stamp.is_some() && self.state.db_stamp == file_stamp(self.db.path());
                if live || self.state.next_salt1 == Some(h.salt.0) || untouched {
                    Ok(Ok(h.start()))
                } else {
                    Ok(Err("a new WAL appeared that cannot be tied to the last capture".into()))
                }
            }
        }
    }

    fn spool_path(&self, name: &SegmentName) -> PathBuf {
        spool_path(&self.meta.spool(), name)
    }

    /// A temp file for a segment, buffered: a level-0 segment then costs
    /// two writes (body, then the patched header) instead of one per part.
    fn create_temp(&self, what: &str, buffer: usize) -> Result<(PathBuf, SpoolFile), CaptureError> {
        let tmp = self.meta.temp_path(what);
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        Ok((tmp, io::BufWriter::with_capacity(buffer, file)))
    }

    /// Move a finished temp segment into the spool: durably if it is
    /// larger than `UNSYNCED_SPOOL_BYTES`.
    fn commit_segment(
        &self,
        tmp: &Path,
        out: SpoolFile,
        name: SegmentName,
        header: &Header,
    ) -> Result<SpoolEntry, CaptureError> {
        let dest = self.spool_path(&name);
        let file = out.into_inner().map_err(|e| io_err(tmp)(e.into_error()))?;
        let size = file.metadata().map_err(io_err(tmp))?.len();
        let sync = size > UNSYNCED_SPOOL_BYTES;
        if sync {
            file.sync_all().map_err(io_err(tmp))?;
        }
        drop(file);
        fs::rename(tmp, &dest).map_err(io_err(&dest))?;
        if sync {
            sync_dir(&self.meta.spool()).map_err(io_err(&self.meta.spool()))?;
        }
        Ok(SpoolEntry { name, path: dest, size, timestamp_ms: header.timestamp_ms })
    }

    /// The next level-0 segment, from this scan's pages. Returns the bytes
    /// too when it was built in memory.
    fn write_l0(&mut self, scan: &Scan, h: &WalHeader, wal: &File) -> Result<SpooledL0, CaptureError> {
        let txid = self.state.txid + 1;
        let db_pages = scan.db_pages.unwrap_or(self.state.db_pages);
        let header = Header {
            page_size: h.page_size,
            min_txid: txid,
            max_txid: txid,
            timestamp_ms: now_ms(),
            pre_checksum: self.state.checksum,
            ..Header::default()
        };
        let in_memory = scan.pages.len().saturating_mul(h.page_size as usize) <= IN_MEMORY_L0_BYTES;
        let (tmp, out, hashes, header, bytes) = if in_memory {
            let (built, header, hashes) = self.build_l0(io::Cursor::new(Vec::new()), header, scan, db_pages, h, wal)?;
            let bytes: Arc<[u8]> = built.into_inner().into();
            // Unbuffered: the one write below is the whole segment.
            let (tmp, mut out) = self.create_temp("l0", 0)?;
            io::Write::write_all(&mut out, &bytes).map_err(io_err(&tmp))?;
            (tmp, out, hashes, header, Some(bytes))
        } else {
            let (tmp, out) = self.create_temp("l0", SEGMENT_WRITE_BUFFER)?;
            let (out, header, hashes) = self.build_l0(out, header, scan, db_pages, h, wal)?;
            (tmp, out, hashes, header, None)
        };
        if let Err(e) = self.wal_unmoved(h, wal) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let name = SegmentName { level: 0, min_txid: txid, max_txid: txid };
        let entry = self.commit_segment(&tmp, out, name, &header)?;
        self.hashes = hashes;
        self.state.txid = txid;
        self.state.db_pages = db_pages;
        self.state.checksum = header.post_checksum;
        self.state.timestamp_ms = header.timestamp_ms;
        Ok((entry, bytes))
    }

    /// Write a level-0 segment's pages into `out`; the hashes after it.
    fn build_l0<W: io::Write + io::Seek>(
        &mut self,
        out: W,
        header: Header,
        scan: &Scan,
        db_pages: u32,
        h: &WalHeader,
        wal: &File,
    ) -> Result<(W, Header, PageHashes), CaptureError> {
        let wal_path = self.db.wal_path();
        let compressor = match self.compressor.take() {
            Some(c) => c,
            None => new_compressor(LEVEL0_ZSTD_LEVEL).map_err(io_err(self.meta.path()))?,
        };
        let mut writer = SegmentWriter::reusing(out, header, compressor).map_err(io_err(self.meta.path()))?;
        writer.expect_pages(scan.pages.len());
        let mut hashes = self.hashes.clone();
        hashes.resize(db_pages);
        let mut buf = vec![0u8; h.page_size as usize];
        // Pages the database already had go in their own block, ahead of
        // the pages this sync appended: the former (page 1, interior pages,
        // the last leaf) are what the next syncs rewrite, so a compaction
        // recompresses just their newest copies and copies the appended
        // block, mostly still current, as it is (see `replica/compact.rs`).
        let grew_from = self.state.db_pages;
        let mut existing = false;
        for (&pgno, &frame) in &scan.pages {
            if existing && pgno > grew_from {
                writer.end_block().map_err(io_err(self.meta.path()))?;
            }
            existing = pgno <= grew_from;
            h.read_page(wal, frame, &mut buf).map_err(io_err(&wal_path))?;
            hashes.set(pgno, page_hash(pgno, &buf));
            writer.add_page(pgno, &buf).map_err(io_err(self.meta.path()))?;
        }
        let (out, header, compressor) =
            writer.finish_keep(db_pages, hashes.checksum()).map_err(io_err(self.meta.path()))?;
        self.compressor = Some(compressor);
        Ok((out, header, hashes))
    }

    /// A snapshot at the current state: pages from this sync's frames where
    /// they exist, the rest read through the read transaction (whose view
    /// lies between the previous capture and the end of `scan`, so those
    /// pages did not change in between). With `new_txid` the snapshot
    /// starts a new chain at the next TXID (first run, after a gap).
    fn write_snapshot(
        &mut self,
        scan: &Scan,
        wal: Option<&(WalHeader, File)>,
        new_txid: bool,
    ) -> Result<SpoolEntry, CaptureError> {
        let (page_size, view_pages) = self.db.page_info()?;
        let db_pages = scan.db_pages.unwrap_or(if new_txid { view_pages } else { self.state.db_pages });
        let txid = if new_txid { self.state.txid + 1 } else { self.state.txid };
        let (tmp, out) = self.create_temp("snapshot", SEGMENT_WRITE_BUFFER)?;
        let header = Header {
            page_size,
            min_txid: 1,
            max_txid: txid,
            timestamp_ms: now_ms(),
            pre_checksum: 0,
            ..Header::default()
        };
        let mut writer = SegmentWriter::new(out, header).map_err(io_err(&tmp))?;
        let mut hashes = PageHashes::new(page_size);
        let from_wal: &BTreeMap<u32, u32> = &scan.pages;
        let mut buf = vec![0u8; page_size as usize];
        let mut add = |pgno: u32, view: Option<&[u8]>, writer: &mut SegmentWriter<SpoolFile>| -> io::Result<()> {
            let page: &[u8] = match (from_wal.get(&pgno), wal) {
                (Some(&frame), Some((h, f))) => {
                    h.read_page(f, frame, &mut buf)?;
                    &buf
                }
                _ => view.ok_or_else(|| {
                    io::Error::other(format!("page {pgno} is in neither the WAL nor the database view"))
                })?,
            };
            hashes.set(pgno, page_hash(pgno, page));
            writer.add_page(pgno, page)
        };
        let dump_pages = view_pages.min(db_pages);
        self.db.for_each_page(dump_pages, |pgno, data| add(pgno, Some(data), &mut writer))?;
        for pgno in dump_pages + 1..=db_pages {
            add(pgno, None, &mut writer).map_err(io_err(&tmp))?;
        }
        hashes.resize(db_pages);
        if let Some(Err(e)) = wal.map(|(h, f)| self.wal_unmoved(h, f)) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        if !new_txid && hashes.checksum() != self.state.checksum {
            // The incremental state and the database disagree: trust the
            // database and restart the chain rather than ship a lie.
            let _ = fs::remove_file(&tmp);
            self.gap =
                Some("the database does not match the captured state (changed while sluice was not watching?)".into());
            return Err(CaptureError::Io {
                path: self.db.path().to_path_buf(),
                source: io::Error::other("state mismatch; the next sync takes a fresh snapshot"),
            });
        }
        let (out, header) = writer.finish(db_pages, hashes.checksum()).map_err(io_err(&tmp))?;
        let name = SegmentName { level: SNAPSHOT_LEVEL, min_txid: 1, max_txid: txid };
        let entry = self.commit_segment(&tmp, out, name, &header)?;
        self.hashes = hashes;
        self.state.page_size = page_size;
        self.state.txid = txid;
        self.state.db_pages = db_pages;
        self.state.checksum = header.post_checksum;
        self.state.timestamp_ms = header.timestamp_ms;
        if wal.is_none() {
            // The next epoch's salt-1 stays what the last WAL we saw
            // implies (set when it went away), or unknown. It is never read
            // from the `-shm`: see `crate::db` for why nothing here opens it.
            self.state.db_stamp = file_stamp(self.db.path());
        }
        Ok(entry)
    }

    /// Make the next TXID follow `txid` if a replica already holds it; the
    /// chain then restarts with a snapshot (our state is not its base).
    pub fn continue_after(&mut self, txid: u64) {
        if txid > self.state.txid {
            tracing::warn!(database = %self.db.path().display(), "a replica holds TXID {txid:016x}, past the local state's {:016x}; continuing after it with a snapshot", self.state.txid);
            self.state.txid = txid;
            self.gap = Some("a replica is ahead of the local state".into());
        }
    }

    /// Frames in the WAL now (after the last capture).
    pub fn wal_frames(&self) -> u32 {
        self.state.wal.map_or(0, |m| m.pos.frames)
    }

    /// Checkpoint if the WAL is past a threshold. Call right after a sync;
    /// returns the checkpoint that ran.
    ///
    /// Our read transaction stays open throughout, so no checkpoint copies
    /// a frame we have not captured. With SQLite's write lock (held for one
    /// small capture and one checkpoint, never a snapshot) the WAL cannot
    /// grow meanwhile, so the checkpoint copies all of it; our read lock is
    /// then refreshed to read the database file alone, which lets the
    /// application's next write restart the WAL (or our TRUNCATE empty it)
    /// with nothing left unshipped. Without the lock (writers kept it busy)
    /// the checkpoint still copies what it safely can.
    pub fn maybe_checkpoint(&mut self) -> Result<Option<CheckpointMode>, CaptureError> {
        let frames = self.wal_frames();
        let mode = if frames >= self.config.truncate_page_n {
            CheckpointMode::Truncate
        } else if frames >= self.config.min_checkpoint_page_count
            || (frames > 0 && self.last_checkpoint.elapsed() >= self.config.checkpoint_interval)
        {
            CheckpointMode::Passive
        } else {
            return Ok(None);
        };
        // A pending gap means the next sync writes a snapshot, which must
        // never happen under the write lock.
        if self.gap.is_some() || self.state.wal.is_none() {
            return Ok(None);
        }
        self.last_checkpoint = Instant::now();
        let truncate = mode == CheckpointMode::Truncate && Instant::now() >= self.truncate_retry_at;
        let wait = if truncate { self.config.busy_timeout } else { PASSIVE_LOCK_WAIT };
        if !self.db.hold_write_lock(wait)? {
            if truncate {
                tracing::info!(database = %self.db.path().display(), frames = self.wal_frames(), "the WAL is past truncate-page-n but writers kept the write lock busy; checkpointing passively, TRUNCATE retried in {TRUNCATE_RETRY:?}");
                self.truncate_retry_at = Instant::now() + TRUNCATE_RETRY;
            }
            self.db.checkpoint(CheckpointMode::Passive)?;
            return Ok(Some(CheckpointMode::Passive));
        }
        let result = self.checkpoint_locked();
        let released = self.db.release_write_lock();
        let copied_all = result?;
        released?;
        if copied_all && truncate {
            // Outside the write lock, which TRUNCATE itself needs. Our view
            // is the database file now, so SQLite refuses to copy anything
            // the application commits meanwhile: this can only empty a WAL
            // whose frames are all shipped (the next sync notices).
            if !self.db.checkpoint(CheckpointMode::Truncate)?.busy {
                return Ok(Some(CheckpointMode::Truncate));
            }
        }
        Ok(Some(CheckpointMode::Passive))
    }

    /// Capture the WAL's tail and copy it into the database; true if all of
    /// it was copied (our read lock then reads the database file alone).
    fn checkpoint_locked(&mut self) -> Result<bool, CaptureError> {
        self.capture(false, true)?;
        if self.gap.is_some() {
            return Ok(false);
        }
        let Some(mark) = self.state.wal else { return Ok(false) };
        let passive = self.db.checkpoint(CheckpointMode::Passive)?;
        if passive.log_frames > mark.pos.frames as i64 {
            // Cannot happen while we hold the write lock. Our read view kept
            // the checkpoint off the uncaptured frames, but their capture is
            // no longer certain: restart the chain rather than guess.
            self.gap = Some(format!(
                "the WAL grew to {} frames past the capture at {} while sluice held the write lock",
                passive.log_frames, mark.pos.frames
            ));
            return Ok(false);
        }
        let copied_all = !passive.busy && passive.checkpointed == passive.log_frames;
        if copied_all {
            self.db.refresh_read_lock()?;
        }
        Ok(copied_all)
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
        // every change since, from its first frame. A changed file with no
        // WAL seen means changes were checkpointed while we were away.
        (_, None) if state.db_stamp.is_some() && state.db_stamp == file_stamp(db.path()) => None,
        _ => Some("the WAL changed in ways that cannot be followed while sluice was not running".into()),
    })
}

mod spool;
mod validate;
use spool::remove_stale_temps;
pub use spool::{list_spool, spool_path};
pub use validate::Validation;

#[cfg(test)]
mod tests;
