//! Bridging a gap. When continuity through the WAL is lost (sluice was
//! killed and the application's checkpoint restarted the WAL meanwhile,
//! or the application was the last to close the database), the replica
//! still holds exactly what the state describes. Every page is read at the
//! read view, as for a snapshot, but only those whose digest differs from
//! the replica's go out, as the next TXID's level-0 segment: the chain
//! continues, and a restore of it equals the database page for page
//! (DESIGN.md, decision 19). A snapshot restarts the chain only when the
//! state cannot serve as that base.

use super::digests::Stored;
use super::{CaptureError, Capturer, SpoolEntry, io_err};
use crate::clock::now_ms;
use crate::segment::{Header, SegmentName};
use crate::wal::{Scan, WalHeader};
use std::fs::File;

/// A resume that would ship more than this share of the pages (a VACUUM
/// while sluice was away, a state from before page digests) gives way to a
/// snapshot: that costs a second read of the database, but the chain then
/// restarts from a self-contained image, which restores without the older
/// snapshot and a segment nearly its size, and compacts as one.
const RESUME_MAX_SHARE: (u64, u64) = (1, 2);

/// What a resume wrote.
struct Resumed {
    /// The level-0 segment, or none when no page differed.
    entry: Option<SpoolEntry>,
    changed: u32,
    pages: u32,
}

impl Capturer {
    /// Write what a gap needs: the pages that differ from the replica's if
    /// the state can serve as its base, else a snapshot starting a new
    /// chain. Returns the segment written, if any.
    pub(super) fn bridge_gap(
        &mut self,
        why: &str,
        scan: &Scan,
        wal: Option<&(WalHeader, File)>,
    ) -> Result<Option<SpoolEntry>, CaptureError> {
        let database = self.db.path().display().to_string();
        let not_resumed = match self.write_resume(scan, wal)? {
            Err(reason) => reason,
            Ok(r) => {
                let shipped = match &r.entry {
                    Some(e) => format!("; they go out as TXID {:016x}", e.name.max_txid),
                    None => String::new(),
                };
                tracing::info!(database = %database, "replication resumes after a gap ({why}): {} of {} pages differ from the replica{shipped}", r.changed, r.pages);
                return Ok(r.entry);
            }
        };
        if self.state.txid == 0 {
            tracing::info!(database = %database, "first sync: taking the initial snapshot");
        } else {
            tracing::warn!(database = %database, "replication chain restarts with a snapshot: {why} ({not_resumed})");
        }
        Ok(Some(self.write_snapshot(scan, wal, true)?))
    }

    /// The stored digests of the replica's pages, if the state is the
    /// replica's base (see `resumable`, `replicas_known`) and the digests
    /// cover it; else why a resume cannot be.
    fn resume_base(&self, page_size: u32) -> Result<Stored, String> {
        if self.state.txid == 0 {
            return Err("no replica yet".into());
        }
        if !self.resumable {
            return Err("the local state is not known to be the replica's".into());
        }
        if !self.replicas_known {
            return Err("not every replica could be listed yet, and one may hold more than the local state".into());
        }
        if self.state.page_size != page_size {
            return Err(format!("the page size changed from {} to {page_size}", self.state.page_size));
        }
        Stored::open(self.meta.path(), self.state.db_pages)
            .ok_or_else(|| "no page digests cover the database (a state from an earlier version?)".into())
    }

    /// The pages that differ from the state as the next TXID; `Ok(Err(why
    /// not))` when the state cannot serve as the base, or most pages differ.
    fn write_resume(
        &mut self,
        scan: &Scan,
        wal: Option<&(WalHeader, File)>,
    ) -> Result<Result<Resumed, String>, CaptureError> {
        let (page_size, view_pages) = self.db.page_info()?;
        let base = match self.resume_base(page_size) {
            Ok(base) => base,
            Err(why) => return Ok(Err(why)),
        };
        let db_pages = scan.db_pages.unwrap_or(view_pages);
        let txid = self.state.txid + 1;
        let header = Header {
            page_size,
            min_txid: txid,
            max_txid: txid,
            timestamp_ms: now_ms(),
            pre_checksum: self.state.checksum,
            ..Header::default()
        };
        let (tmp, mut writer) = self.segment_writer("resume", header)?;
        let sizes = [page_size, view_pages, db_pages];
        let (hashes, changed) = self.snapshot_pages(&mut writer, tmp.path(), scan, wal, sizes, Some(base))?;
        if let Some((h, f)) = wal {
            self.wal_unmoved(h, f)?;
        }
        if changed as u64 * RESUME_MAX_SHARE.1 > db_pages as u64 * RESUME_MAX_SHARE.0 {
            return Ok(Err(format!("{changed} of {db_pages} pages differ from the replica's")));
        }
        if changed == 0 && db_pages == self.state.db_pages && hashes.checksum() == self.state.checksum {
            // The replica already holds the database (sluice was the last
            // to close it, say): nothing to ship, the temp file goes.
            if wal.is_none() {
                self.state.db_stamp = crate::fsutil::file_stamp(self.db.path());
            }
            return Ok(Ok(Resumed { entry: None, changed, pages: db_pages }));
        }
        let (out, header) = writer.finish(db_pages, hashes.checksum()).map_err(io_err(tmp.path()))?;
        let name = SegmentName { level: 0, min_txid: txid, max_txid: txid };
        let entry = self.commit_segment(tmp, out, name, &header)?;
        self.record(hashes, &header, wal.is_none());
        Ok(Ok(Resumed { entry: Some(entry), changed, pages: db_pages }))
    }

    /// Whether every replica was listed and none holds more than the
    /// state: until then a replica may be ahead unseen (a state rolled back
    /// by a power failure, another writer), and a gap takes a snapshot,
    /// which needs no base.
    pub fn replicas_known(&mut self, known: bool) {
        self.replicas_known = known;
    }

    /// Restart the chain with a snapshot at the next sync, and never bridge
    /// this gap from the state: something says the state may not be what
    /// the replica holds, or that it is not the replica's base.
    pub(super) fn distrust(&mut self, why: impl Into<String>) {
        self.gap = Some(why.into());
        self.resumable = false;
    }
}
