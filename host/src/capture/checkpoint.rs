//! Our checkpoints: when the WAL is past a threshold, capture its tail
//! under SQLite's write lock and copy it into the database, so the WAL can
//! restart (or be truncated) with nothing in it left uncaptured.

use super::{CaptureError, Capturer, PASSIVE_LOCK_WAIT};
use crate::db::CheckpointMode;
use std::time::{Duration, Instant};

/// After a TRUNCATE could not get the write lock within the busy timeout,
/// the pause before the next attempt, so a never-idle writer does not cost
/// every sync a whole busy timeout.
const TRUNCATE_RETRY: Duration = Duration::from_secs(10);

impl Capturer {
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
