//! Validation while replicating (Litestream's `validation-interval`, which
//! Litestream parses and never uses): proof, against SQLite itself, that
//! what was captured is the database.
//!
//! Right after a sync that found no new commit, our read transaction sees
//! exactly the captured state: it began in that sync, and any commit made
//! before it would have been in the WAL the sync scanned. Reading every
//! page through that transaction (`sqlite_dbpage`) and hashing it as
//! capture does gives the checksum of the live database at the current
//! TXID, which must equal the checksum capture recorded for that TXID
//! (the `post_checksum` of its segment in every replica). A mismatch
//! restarts the chain with a snapshot, which heals every replica. When
//! the last sync did capture something, one more capture under a briefly
//! held write lock puts the view on the captured state (`settle_view`).

use super::{CaptureError, Capturer};
use crate::checksum::{PageHashes, page_hash};

/// What a validation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validation {
    /// The live database at `txid` has the recorded checksum.
    Matched { txid: u64, pages: u32 },
    /// Not done: the last sync captured something (or restarted the
    /// chain), so the read view may be newer than the captured state.
    NotNow,
    /// The live database at `txid` is not what was captured; the next
    /// sync takes a snapshot.
    Mismatch { txid: u64, detail: String },
    /// The database could not be read to validate it.
    Failed(String),
}

impl Capturer {
    /// Validate the capture against the live database, if the last sync
    /// left the read view at the captured state (see the module comment).
    /// Call right after `sync`, before anything else moves the view.
    pub fn validate(&mut self) -> Result<Validation, CaptureError> {
        if !self.view_is_state && self.gap.is_none() && self.state.txid > 0 {
            self.settle_view()?;
        }
        if !self.view_is_state || self.gap.is_some() || self.state.txid == 0 {
            return Ok(Validation::NotNow);
        }
        let txid = self.state.txid;
        let (page_size, pages) = self.db.page_info()?;
        if page_size != self.state.page_size || pages != self.state.db_pages {
            let detail = format!(
                "the live database has {pages} pages of {page_size} bytes, the capture {} of {}",
                self.state.db_pages, self.state.page_size
            );
            return Ok(self.mismatch(txid, detail));
        }
        let mut live = PageHashes::new(page_size);
        self.db.for_each_page(pages, |pgno, page| {
            live.set(pgno, page_hash(pgno, page));
            Ok(())
        })?;
        if live.checksum() == self.state.checksum && live.as_slice() == self.hashes.as_slice() {
            return Ok(Validation::Matched { txid, pages });
        }
        let first = live.as_slice().iter().zip(self.hashes.as_slice()).position(|(a, b)| a != b).map_or(0, |i| i + 1);
        let detail = format!(
            "checksum {:016x} live against {:016x} captured; first differing page {first}",
            live.checksum(),
            self.state.checksum
        );
        Ok(self.mismatch(txid, detail))
    }

    /// On a database that never stops writing no sync finds nothing new.
    /// Hold the write lock (briefly, as a checkpoint does) for one capture
    /// of the tail: nothing commits between its refresh of the read view
    /// and its scan, so the view is then the captured state, and the pages
    /// are read after the lock is released. Busy: validation waits.
    fn settle_view(&mut self) -> Result<(), CaptureError> {
        if !self.db.hold_write_lock(super::PASSIVE_LOCK_WAIT)? {
            return Ok(());
        }
        let captured = self.capture(false, true);
        let released = self.db.release_write_lock();
        captured?;
        released?;
        self.view_is_state = self.gap.is_none();
        Ok(())
    }

    fn mismatch(&mut self, txid: u64, detail: String) -> Validation {
        self.distrust(format!("validation found the capture at TXID {txid:016x} differs from the database ({detail})"));
        Validation::Mismatch { txid, detail }
    }
}
