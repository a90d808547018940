//! Our checkpoints: when the WAL is past a threshold, capture its tail
//! under SQLite's write lock and copy it into the database, so the WAL can
//! restart (or be truncated) with nothing in it left uncaptured.

use super::{CaptureError, Capturer, PASSIVE_LOCK_WAIT};
use crate::db::{CheckpointMode, CheckpointResult};
use std::time::{Duration, Instant};

/// A WAL this many times past `min-checkpoint-page-count` means the brief
/// waits for the write lock (`PASSIVE_LOCK_WAIT`) keep losing it to a
/// writer that never pauses: it holds the lock nearly all the time, and
/// SQLite's busy handler only polls. Without the lock the WAL never
/// restarts (the writer's own read view keeps it from being reset), so it
/// grew without bound (4 GB at 8,000 transactions a second). Past this, a
/// checkpoint waits up to the busy timeout for the lock, as Litestream's
/// forced checkpoints do; our own thread waits, never the application.
const INSIST_FACTOR: u32 = 4;

/// Pauses, doubling, between tries of the checkpoint under the write lock
/// while it finds the checkpointer busy, for up to the busy timeout. The
/// application's own auto-checkpoint runs right after each of its commits,
/// once the write lock is free, which is just when we take it; it copies
/// what we captured (no further than our read view), with an fsync, often
/// for longer than 20 ms. Under a writer that never pauses, one try (then
/// 20 ms of them) mostly met it, copied nothing, and the WAL never
/// restarted. Waiting is cheap: that checkpoint is doing our work, and the
/// connection running it is not writing meanwhile.
const LOCKED_BUSY_PAUSE: Duration = Duration::from_millis(1);
const LOCKED_BUSY_PAUSE_MAX: Duration = Duration::from_millis(16);

/// What a checkpoint after a sync should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    /// Empty the WAL afterwards (it is past `truncate-page-n`).
    truncate: bool,
    /// Wait up to the busy timeout for the write lock (see `INSIST_FACTOR`).
    insist: bool,
}

/// The checkpoint for a WAL of `frames` captured frames, if one is due:
/// `interval_due` when `checkpoint-interval` has passed since the last,
/// `truncate_allowed` unless a TRUNCATE recently lost the lock.
fn plan(frames: u32, config: &super::CaptureConfig, interval_due: bool, truncate_allowed: bool) -> Option<Plan> {
    // Past `truncate-page-n` is due on its own, even when a configuration
    // sets `min-checkpoint-page-count` above it (nothing forbids either order).
    let past_truncate = frames >= config.truncate_page_n;
    let past_min = frames >= config.min_checkpoint_page_count || past_truncate;
    if !(past_min || (frames > 0 && interval_due)) {
        return None;
    }
    let truncate = past_truncate && truncate_allowed;
    let insist = truncate || frames >= config.min_checkpoint_page_count.saturating_mul(INSIST_FACTOR);
    Some(Plan { truncate, insist })
}

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
        let due = self.last_checkpoint.elapsed() >= self.config.checkpoint_interval;
        let Some(plan) = plan(self.wal_frames(), &self.config, due, Instant::now() >= self.truncate_retry_at) else {
            return Ok(None);
        };
        // A pending gap means the next sync writes a snapshot, which must
        // never happen under the write lock.
        if self.gap.is_some() || self.state.wal.is_none() {
            return Ok(None);
        }
        self.last_checkpoint = Instant::now();
        let wait = if plan.insist { self.config.busy_timeout } else { PASSIVE_LOCK_WAIT };
        if plan.insist {
            // Copy the bulk first, without the lock (our read view keeps it
            // to captured frames): the application then waits only for
            // the tail to be captured and copied.
            self.db.checkpoint(CheckpointMode::Passive)?;
        }
        if !self.db.hold_write_lock(wait)? {
            if plan.truncate {
                tracing::info!(database = %self.db.path().display(), frames = self.wal_frames(), "the WAL is past truncate-page-n but writers kept the write lock busy; checkpointing passively, TRUNCATE retried in {TRUNCATE_RETRY:?}");
                self.truncate_retry_at = Instant::now() + TRUNCATE_RETRY;
            }
            self.db.checkpoint(CheckpointMode::Passive)?;
            return Ok(Some(CheckpointMode::Passive));
        }
        let truncate = plan.truncate;
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
        let passive = self.checkpoint_all_locked()?;
        if passive.log_frames > mark.pos.frames as i64 {
            // Cannot happen while we hold the write lock. Our read view kept
            // the checkpoint off the uncaptured frames, but their capture is
            // no longer certain: restart the chain rather than guess.
            self.distrust(format!(
                "the WAL grew to {} frames past the capture at {} while sluice held the write lock",
                passive.log_frames, mark.pos.frames
            ));
            return Ok(false);
        }
        let copied_all = passive.copied_all();
        tracing::trace!(database = %self.db.path().display(), "checkpoint under the write lock: {} of {} frames copied{}", passive.checkpointed, passive.log_frames, if passive.busy { ", busy" } else { "" });
        if copied_all {
            self.db.refresh_read_lock()?;
        }
        Ok(copied_all)
    }

    /// Under the write lock: a PASSIVE checkpoint, tried again while it
    /// finds the checkpointer busy, for up to the busy timeout (see
    /// `LOCKED_BUSY_PAUSE`).
    pub(super) fn checkpoint_all_locked(&mut self) -> Result<CheckpointResult, CaptureError> {
        let mut passive = self.db.checkpoint(CheckpointMode::Passive)?;
        let (started, mut pause) = (Instant::now(), LOCKED_BUSY_PAUSE);
        while passive.busy && started.elapsed() < self.config.busy_timeout {
            std::thread::sleep(pause);
            pause = (pause * 2).min(LOCKED_BUSY_PAUSE_MAX);
            passive = self.db.checkpoint(CheckpointMode::Passive)?;
        }
        Ok(passive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::CaptureConfig;

    #[test]
    fn a_wal_far_past_the_threshold_waits_for_the_write_lock() {
        let c = CaptureConfig::default();
        let min = c.min_checkpoint_page_count;
        assert_eq!(plan(0, &c, true, true), None, "nothing to copy");
        assert_eq!(plan(min - 1, &c, false, true), None, "below the threshold, interval not due");
        assert_eq!(plan(1, &c, true, true), Some(Plan { truncate: false, insist: false }), "interval due");
        assert_eq!(plan(min, &c, false, true), Some(Plan { truncate: false, insist: false }));
        assert_eq!(plan(min * INSIST_FACTOR, &c, false, true), Some(Plan { truncate: false, insist: true }));
        assert_eq!(plan(c.truncate_page_n, &c, false, true), Some(Plan { truncate: true, insist: true }));
        assert_eq!(
            plan(c.truncate_page_n, &c, false, false),
            Some(Plan { truncate: false, insist: true }),
            "a TRUNCATE that lost the lock waits its turn, but the WAL is still far past the threshold"
        );
    }

    #[test]
    fn truncate_page_n_is_due_even_below_a_larger_minimum() {
        let c = CaptureConfig { min_checkpoint_page_count: 1000, truncate_page_n: 40, ..CaptureConfig::default() };
        assert_eq!(plan(39, &c, false, true), None);
        assert_eq!(plan(40, &c, false, true), Some(Plan { truncate: true, insist: true }));
        assert_eq!(plan(40, &c, false, false), Some(Plan { truncate: false, insist: false }));
    }
}
