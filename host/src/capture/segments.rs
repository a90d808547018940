//! Writing segments into the spool: a level-0 segment from a sync's
//! frames, a snapshot from those frames and the read view.

use super::spool::{Budgeted, SpoolTemp};
use super::{CaptureError, Capturer, SpoolEntry, digests, io_err, spool_path};
use crate::checksum::PageHashes;
use crate::clock::now_ms;
use crate::fsutil::{file_stamp, sync_dir};
use crate::segment::writer::{LEVEL0_ZSTD_LEVEL, new_compressor};
use crate::segment::{Header, SNAPSHOT_LEVEL, SegmentName, SegmentWriter};
use crate::wal::{Scan, WalHeader};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// A segment being written to the meta directory, never into the
/// filesystem's reserve.
type SpoolFile = io::BufWriter<Budgeted>;

/// A level-0 segment in the spool and, if it was built in memory, its bytes.
type SpooledL0 = (SpoolEntry, Option<Arc<[u8]>>);

impl Capturer {
    fn spool_path(&self, name: &SegmentName) -> PathBuf {
        spool_path(&self.meta.spool(), name)
    }

    /// A temp file for a segment, buffered: a level-0 segment then costs
    /// two writes (body, then the patched header) instead of one per part.
    fn create_temp(&self, what: &str, buffer: usize) -> Result<(SpoolTemp, SpoolFile), CaptureError> {
        let tmp = SpoolTemp::new(self.meta.temp_path(what));
        let file = File::create(tmp.path()).map_err(io_err(tmp.path()))?;
        Ok((tmp, io::BufWriter::with_capacity(buffer, Budgeted::new(file))))
    }

    /// Move a finished temp segment into the spool: durably if it is
    /// larger than `UNSYNCED_SPOOL_BYTES`.
    pub(super) fn commit_segment(
        &self,
        temp: SpoolTemp,
        out: SpoolFile,
        name: SegmentName,
        header: &Header,
    ) -> Result<SpoolEntry, CaptureError> {
        let dest = self.spool_path(&name);
        let tmp = temp.path();
        let file = out.into_inner().map_err(|e| io_err(tmp)(e.into_error()))?.into_file();
        let size = file.metadata().map_err(io_err(tmp))?.len();
        let sync = size > UNSYNCED_SPOOL_BYTES;
        if sync {
            file.sync_all().map_err(io_err(tmp))?;
        }
        drop(file);
        fs::rename(tmp, &dest).map_err(io_err(&dest))?;
        temp.kept();
        if sync {
            sync_dir(&self.meta.spool()).map_err(io_err(&self.meta.spool()))?;
        }
        Ok(SpoolEntry { name, path: dest, size, timestamp_ms: header.timestamp_ms })
    }

    /// The next level-0 segment, from this scan's pages. Returns the bytes
    /// too when it was built in memory.
    pub(super) fn write_l0(&mut self, scan: &Scan, h: &WalHeader, wal: &File) -> Result<SpooledL0, CaptureError> {
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
            io::Write::write_all(&mut out, &bytes).map_err(io_err(tmp.path()))?;
            (tmp, out, hashes, header, Some(bytes))
        } else {
            let (tmp, out) = self.create_temp("l0", SEGMENT_WRITE_BUFFER)?;
            let (out, header, hashes) = self.build_l0(out, header, scan, db_pages, h, wal)?;
            (tmp, out, hashes, header, None)
        };
        self.wal_unmoved(h, wal)?;
        let name = SegmentName { level: 0, min_txid: txid, max_txid: txid };
        let entry = self.commit_segment(tmp, out, name, &header)?;
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
            let (entry, hash) = digests::entry(pgno, &buf);
            hashes.set(pgno, hash);
            self.digests.put(pgno, &entry);
            writer.add_page(pgno, &buf).map_err(io_err(self.meta.path()))?;
        }
        let (out, header, compressor) =
            writer.finish_keep(db_pages, hashes.checksum()).map_err(io_err(self.meta.path()))?;
        self.compressor = Some(compressor);
        Ok((out, header, hashes))
    }

    /// A segment writer over a new temp file in the spool.
    pub(super) fn segment_writer(
        &self,
        what: &str,
        header: Header,
    ) -> Result<(SpoolTemp, SegmentWriter<SpoolFile>), CaptureError> {
        let (tmp, out) = self.create_temp(what, SEGMENT_WRITE_BUFFER)?;
        let writer = SegmentWriter::new(out, header).map_err(io_err(tmp.path()))?;
        Ok((tmp, writer))
    }

    /// A snapshot at the current state: pages from this sync's frames where
    /// they exist, the rest read through the read transaction (whose view
    /// lies between the previous capture and the end of `scan`, so those
    /// pages did not change in between). With `new_txid` the snapshot
    /// starts a new chain at the next TXID (first run, after a gap).
    pub(super) fn write_snapshot(
        &mut self,
        scan: &Scan,
        wal: Option<&(WalHeader, File)>,
        new_txid: bool,
    ) -> Result<SpoolEntry, CaptureError> {
        let (page_size, view_pages) = self.db.page_info()?;
        let db_pages = scan.db_pages.unwrap_or(if new_txid { view_pages } else { self.state.db_pages });
        let txid = if new_txid { self.state.txid + 1 } else { self.state.txid };
        let header = Header {
            page_size,
            min_txid: 1,
            max_txid: txid,
            timestamp_ms: now_ms(),
            pre_checksum: 0,
            ..Header::default()
        };
        let (tmp, mut writer) = self.segment_writer("snapshot", header)?;
        let sizes = [page_size, view_pages, db_pages];
        let (hashes, _) = self.snapshot_pages(&mut writer, tmp.path(), scan, wal, sizes, None)?;
        if let Some((h, f)) = wal {
            self.wal_unmoved(h, f)?;
        }
        if !new_txid && hashes.checksum() != self.state.checksum {
            // The incremental state and the database disagree: trust the
            // database and restart the chain rather than ship a lie.
            self.distrust("the database does not match the captured state (changed while sluice was not watching?)");
            return Err(CaptureError::Io {
                path: self.db.path().to_path_buf(),
                source: io::Error::other("state mismatch; the next sync takes a fresh snapshot"),
            });
        }
        let (out, header) = writer.finish(db_pages, hashes.checksum()).map_err(io_err(tmp.path()))?;
        let name = SegmentName { level: SNAPSHOT_LEVEL, min_txid: 1, max_txid: txid };
        let entry = self.commit_segment(tmp, out, name, &header)?;
        self.record(hashes, &header, wal.is_none());
        // Every page's digest was just rewritten, from the base itself.
        self.resumable = true;
        Ok(entry)
    }

    /// Make the state what a segment written from a full pass over the
    /// pages (`hashes`, with `header`) says: a snapshot's or a resume's.
    pub(super) fn record(&mut self, hashes: PageHashes, header: &Header, no_wal: bool) {
        self.hashes = hashes;
        self.state.page_size = header.page_size;
        self.state.txid = header.max_txid;
        self.state.db_pages = header.db_pages;
        self.state.checksum = header.post_checksum;
        self.state.timestamp_ms = header.timestamp_ms;
        if no_wal {
            // The next epoch's salt-1 stays what the last WAL we saw
            // implies (set when it went away), or unknown. It is never read
            // from the `-shm`: see `crate::db` for why nothing here opens it.
            self.state.db_stamp = file_stamp(self.db.path());
        }
    }

    /// Every page at the read view, as `write_snapshot` describes, hashed
    /// and digested (`capture::digests`). With `base`, the stored digests
    /// of the replica's pages, only the pages that differ from it go into
    /// `writer`. Returns the hashes of all pages and how many went in.
    pub(super) fn snapshot_pages(
        &mut self,
        writer: &mut SegmentWriter<SpoolFile>,
        tmp: &Path,
        scan: &Scan,
        wal: Option<&(WalHeader, File)>,
        [page_size, view_pages, db_pages]: [u32; 3],
        mut base: Option<digests::Stored>,
    ) -> Result<(PageHashes, u32), CaptureError> {
        let (db, state_hashes, digest_writer) = (&self.db, self.hashes.as_slice(), &mut self.digests);
        let lock_page = crate::checksum::lock_page(page_size);
        let wal_path = db.wal_path();
        let mut hashes = PageHashes::new(page_size);
        let mut buf = vec![0u8; page_size as usize];
        let mut written = 0u32;
        let mut add = |pgno: u32, view: Option<&[u8]>| -> Result<(), CaptureError> {
            let page: &[u8] = match (scan.pages.get(&pgno), wal) {
                (Some(&frame), Some((h, f))) => {
                    h.read_page(f, frame, &mut buf).map_err(io_err(&wal_path))?;
                    &buf
                }
                _ => view.ok_or_else(|| CaptureError::Io {
                    path: db.path().to_path_buf(),
                    source: io::Error::other(format!("page {pgno} is in neither the WAL nor the database view")),
                })?,
            };
            let (entry, hash) = digests::entry(pgno, page);
            hashes.set(pgno, hash);
            let i = pgno as usize - 1;
            let unchanged = match (base.as_mut().and_then(|b| b.get(pgno)), state_hashes.get(i)) {
                // SQLite never reads or writes the lock-byte page (its
                // hash is 0 in the state whatever it holds): never news.
                _ if base.is_some() && pgno == lock_page => true,
                (Some(stored), Some(&state_hash)) => digests::unchanged(&stored, state_hash, &entry),
                _ => false,
            };
            if unchanged {
                return Ok(());
            }
            written += 1;
            digest_writer.put(pgno, &entry);
            writer.add_page(pgno, page).map_err(io_err(tmp))
        };
        // An error on our side (the WAL, the spool's disk) is kept as it
        // is: `for_each_page` would report it as the database's.
        let mut failed = None;
        let dump_pages = view_pages.min(db_pages);
        let read = db.for_each_page(dump_pages, |pgno, data| {
            add(pgno, Some(data)).map_err(|e| {
                let msg = e.to_string();
                failed = Some(e);
                io::Error::other(msg)
            })
        });
        if let Some(e) = failed {
            return Err(e);
        }
        read?;
        for pgno in dump_pages + 1..=db_pages {
            add(pgno, None)?;
        }
        hashes.resize(db_pages);
        Ok((hashes, written))
    }
}
