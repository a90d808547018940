//! When the per-database loop looks at the database, syncs and sleeps.
//! The decisions are pure functions of what the last look found and of the
//! clock handed in; `replicate::run_db` does the I/O around them (reading
//! the files' stamps, syncing, arming the file watch, sleeping).
//!
//! The rules: a look syncs when the database's files changed, when a
//! replica wants a snapshot, or when something asked for one look anyway
//! (a notification, a validation falling due, a transaction half-written
//! at the last look). While writes keep coming, syncs are batched: at most
//! one per batch (the shortest replica sync interval), counted from when
//! the last busy sync began. A transaction found half-written is looked at
//! again soon, backing off to the batch. A quiet database is looked at
//! every monitor interval, or at once when the file watch says it changed.

use std::time::Duration;
use tokio::time::Instant;

/// First wait before looking again at a transaction caught half-written
/// (its commit frame usually lands well within this), doubled on each
/// look that finds it still in flight, up to the sync interval. Before,
/// such a look counted as busy and the commit waited a whole sync
/// interval: a 200-row transaction on an idle database took ~1 s to be
/// durable in half of 30 tries.
pub const IN_FLIGHT_RECHECK: Duration = Duration::from_millis(5);

/// What a sync made of a look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// It ran: whether it captured something, whether it found a
    /// transaction half-written, and whether the next look must come at
    /// once (a validation mismatch needs its healing snapshot).
    Ran { captured: bool, in_flight: bool, again: bool },
    /// It failed: retried after a batch, not at every write.
    Failed,
    /// It failed in a way only an operator can fix (the spool's disk is
    /// full): retried with a back-off from a batch up to
    /// `STUCK_RETRY_MAX`, since every attempt would fail the same way.
    Stuck,
}

/// Longest pause between retries of a sync that needs an operator. The
/// application is not held back meanwhile (capture lets go of its read
/// transaction, see `Capturer::sync`), so waiting costs only how soon
/// replication resumes once the operator has acted.
pub const STUCK_RETRY_MAX: Duration = Duration::from_secs(30);

/// How often a quiet database is looked at while the file watch on its
/// directory is in place: the watch wakes the loop at its next write, so
/// this look is only the fallback for a lost notification (an overflowed
/// event queue), which then costs latency, never data (the read lock
/// keeps the WAL). At `monitor-interval` (1 s) every idle database cost
/// two `statx` and a few wake-ups a second, for nothing.
pub const WATCHED_IDLE_LOOK: Duration = Duration::from_secs(60);

/// The same fallback look for a resting database. A lost notification
/// costs it latency too, never data: a commit missed stays in the WAL, or
/// is bridged if the application checkpointed it (decision 29). An
/// overflowed event queue wakes every database anyway; this look only
/// covers a watch lost some other way. At 60 s, 10,000 resting databases
/// made 330 `statx` and as many task wake-ups a second.
pub const RESTING_LOOK: Duration = Duration::from_secs(600);

/// A failure that keeps coming back is logged again at most this often
/// (with how many times it happened), not at every retry.
pub const REPEAT_LOG_EVERY: Duration = Duration::from_secs(300);

/// When to look next, and whether a file-watch notification may cut the
/// wait short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextLook {
    pub at: Instant,
    pub listen: bool,
}

/// The pacing state of one database's loop.
#[derive(Debug)]
pub struct Pacer<S> {
    /// Syncs under a steady write load are at least this far apart.
    batch: Duration,
    /// How often a quiet database is looked at without a notification.
    monitor: Duration,
    /// The files' stamp at the last successful sync.
    last_stamp: Option<S>,
    /// A snapshot was asked for (`-force-snapshot`) and not yet written.
    force_snapshot: bool,
    /// When the last sync that captured something (or failed) began.
    last_sync: Instant,
    /// Sync at the next look whatever the stamps say.
    look_anyway: bool,
    /// The pause before the next look at a half-written transaction.
    recheck: Duration,
    /// What the last look found: it synced something (or failed to), and
    /// a transaction was half-written.
    busy: bool,
    in_flight: bool,
    /// The pause after a sync that needs an operator (zero otherwise).
    stuck: Duration,
    /// A file watch on the database's directory is in place: quiet looks
    /// are `WATCHED_IDLE_LOOK` apart, not `monitor`.
    watched: bool,
    /// Close the database's files after this long quiet (`idle-timeout`;
    /// `None`: never). See `should_rest`.
    rest_after: Option<Duration>,
    /// The files are closed (a sync opens them again).
    resting: bool,
    /// A try at resting that could not (a writer came) is not repeated
    /// before this.
    rest_retry_at: Instant,
}

impl<S: PartialEq> Pacer<S> {
    pub fn new(batch: Duration, monitor: Duration, force_snapshot: bool, now: Instant) -> Pacer<S> {
        Pacer {
            batch,
            monitor,
            last_stamp: None,
            force_snapshot,
            // The first write after start-up syncs at once.
            last_sync: now.checked_sub(batch).unwrap_or(now),
            look_anyway: false,
            recheck: IN_FLIGHT_RECHECK,
            busy: false,
            in_flight: false,
            stuck: Duration::ZERO,
            watched: false,
            rest_after: None,
            resting: false,
            rest_retry_at: now,
        }
    }

    /// Close the database's files once it was quiet for `after`.
    pub fn rest_after(mut self, after: Option<Duration>) -> Self {
        self.rest_after = after.filter(|a| !a.is_zero());
        self
    }

    /// Whether to close the database's files now: the last look found
    /// nothing to capture and nothing half-written, nothing was captured
    /// for `idle-timeout`, and they are open.
    /// `crowded`: other databases wait to open theirs, so rest as soon as
    /// quiet.
    pub fn should_rest(&self, now: Instant, crowded: bool) -> bool {
        let quiet = !self.busy && !self.in_flight && !self.look_anyway;
        quiet && self.rest_at().is_some_and(|at| crowded || now >= at)
    }

    /// When the files may be closed, if they are open and may ever be.
    fn rest_at(&self) -> Option<Instant> {
        let after = self.rest_after.filter(|_| !self.resting)?;
        Some((self.last_sync + after).max(self.rest_retry_at))
    }

    /// What a try at resting did: `Some(stamp)`, the files' stamp as it
    /// left them (its checkpoint wrote the database, which is no news);
    /// `None`, it could not, and is tried again after `idle-timeout`.
    pub fn rested(&mut self, stamp: Option<S>, now: Instant) {
        match stamp {
            Some(stamp) => {
                self.resting = true;
                self.last_stamp = Some(stamp);
            }
            None => self.rest_retry_at = now + self.rest_after.unwrap_or_default(),
        }
    }

    /// Whether the files are closed (`Capturer::rest`).
    pub fn is_resting(&self) -> bool {
        self.resting
    }

    /// Resting, and the files are as they were left (`stamp`): a sync
    /// would find nothing (the final sync is skipped).
    pub fn resting_unchanged(&self, stamp: &S) -> bool {
        self.resting && self.last_stamp.as_ref() == Some(stamp)
    }

    /// Whether a file watch will wake the loop at the database's next write.
    pub fn watched(&mut self, watched: bool) {
        self.watched = watched;
    }

    /// The next look syncs whatever the stamps say (a validation is due).
    pub fn look_anyway(&mut self) {
        self.look_anyway = true;
    }

    /// Whether this look syncs, given the files' `stamp` now and whether a
    /// replica wants a snapshot: `Some(snapshot)` to sync. Resets what the
    /// previous look found.
    pub fn should_sync(&mut self, stamp: &S, replica_wants: bool) -> Option<bool> {
        self.busy = false;
        self.in_flight = false;
        let changed = self.last_stamp.as_ref() != Some(stamp);
        let look = std::mem::take(&mut self.look_anyway);
        (look || changed || replica_wants || self.force_snapshot).then_some(replica_wants || self.force_snapshot)
    }

    /// Record a sync that began at `started` with the files at `stamp`.
    pub fn synced(&mut self, started: Instant, stamp: S, outcome: SyncOutcome) {
        // A sync opens resting files.
        self.resting = false;
        match outcome {
            SyncOutcome::Ran { captured, in_flight, again } => {
                self.force_snapshot = false;
                self.last_stamp = Some(stamp);
                (self.busy, self.in_flight) = (captured, in_flight);
                self.look_anyway |= again;
                self.stuck = Duration::ZERO;
            }
            SyncOutcome::Failed => self.busy = true,
            SyncOutcome::Stuck => {
                self.busy = true;
                self.stuck = (self.stuck * 2).clamp(self.batch, STUCK_RETRY_MAX.max(self.batch));
            }
        }
        if self.busy {
            self.last_sync = started;
        }
    }

    /// The stamp the last sync recorded was read in the clock tick of a
    /// write (`fsutil::coarse_clock_past`): a later write in that tick may
    /// leave it unchanged, and its notification may have come while the
    /// watch was off. The next look syncs by content, soon if this one
    /// captured nothing (a commit missed so waited for the next write, or
    /// the minute's fallback look).
    pub fn stamp_unsettled(&mut self) {
        self.look_anyway = true;
        if !self.busy {
            self.in_flight = true;
        }
    }

    /// The last look found nothing to do: the file watch may be armed.
    pub fn quiet(&self) -> bool {
        !self.busy
    }

    /// The file watch was just armed: look once more at once, for a write
    /// that slipped in before it was in place (with the stamps, or
    /// regardless if a transaction was half-written).
    pub fn armed(&mut self) {
        self.look_anyway = self.in_flight && !self.busy;
    }

    /// When to look next, as of `now`.
    pub fn next_look(&mut self, now: Instant) -> NextLook {
        let at = if self.in_flight && !self.busy {
            // A long transaction's frames are not rescanned more than a
            // few times a second.
            self.look_anyway = true;
            let at = now + self.recheck;
            self.recheck = (self.recheck * 2).min(self.batch);
            at
        } else {
            self.recheck = IN_FLIGHT_RECHECK;
            let quiet = match (self.watched, self.resting) {
                (true, true) => self.monitor.max(RESTING_LOOK),
                (true, false) => self.monitor.max(WATCHED_IDLE_LOOK),
                (false, _) => self.monitor,
            };
            let rest = self.rest_at().map_or(now + quiet, |at| at.max(now));
            if self.busy { self.last_sync + self.pause() } else { (now + quiet).min(rest) }
        };
        // Waiting on a half-written transaction, its own writes' events
        // would only cut the back-off short.
        NextLook { at, listen: !self.look_anyway }
    }

    /// A notification woke the loop: the next look syncs, once the batch
    /// since the last busy sync is over (a write after a quiet spell syncs
    /// at once; a busy database at most once per batch). Returns when.
    pub fn woke(&mut self) -> Instant {
        // Resting, the stamps tell every write (`Capturer::rest` let the
        // clock pass the files' times), and a notification may be the
        // rest's own checkpoint: forcing a sync would wake the database
        // for nothing, and rest it again, in a loop.
        self.look_anyway = !self.resting;
        self.last_sync + self.pause()
    }

    /// The least time between a busy sync and the next.
    fn pause(&self) -> Duration {
        self.batch.max(self.stuck)
    }
}

/// Keeps a failure that repeats from flooding the log: the first one is
/// logged, the same one again only every `REPEAT_LOG_EVERY` with a count,
/// and the recovery once. Two failures are the same when their messages
/// differ only in numbers (free bytes, page numbers, TXIDs).
#[derive(Debug, Default)]
pub struct RepeatFilter {
    /// The failing message without its digits, when it was last logged,
    /// and how many times it has happened since.
    failing: Option<(String, Instant, u64)>,
}

impl RepeatFilter {
    /// A failure with this message: the line to log, if any.
    pub fn failed(&mut self, msg: String, now: Instant) -> Option<String> {
        let key: String = msg.chars().filter(|c| !c.is_ascii_digit()).collect();
        match &mut self.failing {
            Some((last, logged, count)) if *last == key => {
                *count += 1;
                if now.duration_since(*logged) < REPEAT_LOG_EVERY {
                    return None;
                }
                let line = format!("{msg} (failed {count} times since last said)");
                (*logged, *count) = (now, 0);
                Some(line)
            }
            _ => {
                self.failing = Some((key, now, 0));
                Some(msg)
            }
        }
    }

    /// A success: whether a failure had been logged (say it recovered).
    pub fn recovered(&mut self) -> bool {
        self.failing.take().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BATCH: Duration = Duration::from_secs(1);
    const MONITOR: Duration = Duration::from_millis(100);

    fn pacer(now: Instant) -> Pacer<u32> {
        Pacer::new(BATCH, MONITOR, false, now)
    }

    fn ran(captured: bool, in_flight: bool) -> SyncOutcome {
        SyncOutcome::Ran { captured, in_flight, again: false }
    }

    #[test]
    fn a_look_syncs_only_when_the_files_changed_or_someone_asks() {
        let now = Instant::now();
        let mut p = pacer(now);
        assert_eq!(p.should_sync(&1, false), Some(false), "the first look always syncs");
        p.synced(now, 1, ran(true, false));
        assert_eq!(p.should_sync(&1, false), None, "unchanged files");
        assert_eq!(p.should_sync(&2, false), Some(false), "changed files");
        p.synced(now, 2, ran(false, false));
        assert_eq!(p.should_sync(&2, true), Some(true), "a replica wants a snapshot");
        p.look_anyway();
        assert_eq!(p.should_sync(&2, false), Some(false), "a validation is due");
        assert_eq!(p.should_sync(&2, false), None, "look_anyway is spent by one look");
    }

    #[test]
    fn a_forced_snapshot_is_asked_for_until_a_sync_succeeds() {
        let now = Instant::now();
        let mut p: Pacer<u32> = Pacer::new(BATCH, MONITOR, true, now);
        assert_eq!(p.should_sync(&1, false), Some(true));
        p.synced(now, 1, SyncOutcome::Failed);
        assert_eq!(p.should_sync(&1, false), Some(true), "still owed after a failure");
        p.synced(now, 1, ran(true, false));
        assert_eq!(p.should_sync(&1, false), None);
    }

    #[test]
    fn a_quiet_watched_database_is_looked_at_rarely_and_a_busy_one_as_before() {
        let t0 = Instant::now();
        let mut p: Pacer<u32> = Pacer::new(BATCH, MONITOR, false, t0);
        p.should_sync(&1, false);
        p.synced(t0, 1, SyncOutcome::Ran { captured: false, in_flight: false, again: false });
        p.watched(true);
        assert_eq!(p.next_look(t0), NextLook { at: t0 + WATCHED_IDLE_LOOK, listen: true });
        p.watched(false);
        assert_eq!(p.next_look(t0), NextLook { at: t0 + MONITOR, listen: true }, "no watch: the monitor interval");
        p.watched(true);
        p.should_sync(&2, false);
        p.synced(t0, 2, SyncOutcome::Ran { captured: true, in_flight: false, again: false });
        assert_eq!(p.next_look(t0).at, t0 + BATCH, "a busy database is paced by its batch, watched or not");
    }

    #[test]
    fn a_busy_database_syncs_once_per_batch_and_a_quiet_one_every_monitor_interval() {
        let t0 = Instant::now();
        let mut p = pacer(t0);
        p.should_sync(&1, false);
        p.synced(t0, 1, ran(true, false));
        let t1 = t0 + Duration::from_millis(30);
        assert_eq!(p.next_look(t1), NextLook { at: t0 + BATCH, listen: true }, "batched from when the sync began");
        assert_eq!(p.woke(), t0 + BATCH, "a notification waits for the batch too");
        assert_eq!(p.should_sync(&1, false), Some(false), "and then syncs");
        p.synced(t0 + BATCH, 1, ran(false, false));
        assert!(p.quiet());
        let t2 = t0 + BATCH + Duration::from_millis(3);
        assert_eq!(p.next_look(t2), NextLook { at: t2 + MONITOR, listen: true });
        assert_eq!(p.woke(), t0 + BATCH, "a write after a quiet spell syncs at once");
    }

    #[test]
    fn a_failed_sync_is_retried_after_a_batch_not_at_every_write() {
        let t0 = Instant::now();
        let mut p = pacer(t0);
        p.should_sync(&1, false);
        p.synced(t0, 1, SyncOutcome::Failed);
        assert!(!p.quiet());
        assert_eq!(p.next_look(t0).at, t0 + BATCH);
        assert_eq!(p.should_sync(&1, false), Some(false), "the stamp was not recorded: the retry syncs");
    }

    #[test]
    fn a_sync_that_needs_an_operator_backs_off_and_a_success_resets_it() {
        let t0 = Instant::now();
        let mut p = pacer(t0);
        let mut pauses = Vec::new();
        for _ in 0..8 {
            p.should_sync(&1, false);
            p.synced(t0, 1, SyncOutcome::Stuck);
            assert!(!p.quiet(), "a stuck database keeps its watch disarmed");
            pauses.push(p.next_look(t0).at - t0);
        }
        assert_eq!(pauses[0], BATCH);
        assert_eq!(pauses[1], BATCH * 2);
        assert_eq!(*pauses.last().unwrap(), STUCK_RETRY_MAX);
        assert_eq!(p.woke(), t0 + STUCK_RETRY_MAX, "a write does not cut the back-off short");
        p.should_sync(&1, false);
        p.synced(t0, 1, ran(true, false));
        assert_eq!(p.next_look(t0).at, t0 + BATCH);
    }

    #[test]
    fn a_repeating_failure_is_logged_once_then_every_few_minutes_with_a_count() {
        let t0 = Instant::now();
        let mut f = RepeatFilter::default();
        assert!(!f.recovered(), "nothing failed yet");
        assert_eq!(f.failed("disk full (0 MB free)".into(), t0).as_deref(), Some("disk full (0 MB free)"));
        for i in 1..100 {
            assert_eq!(f.failed(format!("disk full ({i} MB free)"), t0 + Duration::from_secs(i)), None);
        }
        let later = t0 + REPEAT_LOG_EVERY;
        assert_eq!(
            f.failed("disk full (7 MB free)".into(), later).as_deref(),
            Some("disk full (7 MB free) (failed 100 times since last said)")
        );
        assert_eq!(f.failed("other".into(), later).as_deref(), Some("other"), "a different failure is said at once");
        assert!(f.recovered());
        assert!(!f.recovered(), "recovery is said once");
    }

    #[test]
    fn a_half_written_transaction_is_rechecked_with_back_off() {
        let t0 = Instant::now();
        let mut p = pacer(t0);
        let mut pauses = Vec::new();
        for _ in 0..10 {
            assert!(p.should_sync(&1, false).is_some(), "an in-flight look is followed by a sync");
            p.synced(t0, 1, ran(false, true));
            let next = p.next_look(t0);
            assert!(!next.listen, "its own writes would only cut the back-off short");
            pauses.push(next.at - t0);
        }
        assert_eq!(pauses[0], IN_FLIGHT_RECHECK);
        assert_eq!(pauses[1], IN_FLIGHT_RECHECK * 2);
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]) && *pauses.last().unwrap() == BATCH, "{pauses:?}");
        p.should_sync(&1, false);
        p.synced(t0, 1, ran(true, false));
        p.next_look(t0);
        p.should_sync(&1, false);
        p.synced(t0, 1, ran(false, true));
        assert_eq!(p.next_look(t0).at - t0, IN_FLIGHT_RECHECK, "the back-off starts over after it committed");
    }

    #[test]
    fn a_stamp_read_in_a_writes_clock_tick_is_not_trusted_by_the_next_look() {
        let t0 = Instant::now();
        let mut p = pacer(t0);
        // Captured, stamp unsettled: after the batch, a look by content
        // even though the stamp did not move.
        p.should_sync(&1, false);
        p.synced(t0, 1, ran(true, false));
        p.stamp_unsettled();
        assert_eq!(p.next_look(t0).at, t0 + BATCH);
        assert_eq!(p.should_sync(&1, false), Some(false), "an unchanged but unsettled stamp proves nothing");
        // Captured nothing, stamp unsettled: looked at again soon, and
        // not rested meanwhile.
        p.synced(t0, 1, ran(false, false));
        p.stamp_unsettled();
        assert!(!p.should_rest(t0 + BATCH * 100, false));
        assert_eq!(p.next_look(t0).at - t0, IN_FLIGHT_RECHECK);
        assert_eq!(p.should_sync(&1, false), Some(false));
        // Settled: the stamps decide again.
        p.synced(t0, 1, ran(false, false));
        assert_eq!(p.should_sync(&1, false), None);
    }

    #[test]
    fn arming_the_watch_looks_again_at_once_only_for_a_half_written_transaction() {
        let t0 = Instant::now();
        let mut p = pacer(t0);
        p.should_sync(&1, false);
        p.synced(t0, 1, ran(false, true));
        assert!(p.quiet());
        p.armed();
        assert_eq!(p.should_sync(&1, false), Some(false));
        p.synced(t0, 1, ran(false, false));
        p.armed();
        assert_eq!(p.should_sync(&1, false), None, "a quiet database is looked at by its stamps only");
    }

    #[test]
    fn a_database_rests_after_idle_timeout_quiet_and_a_sync_wakes_it() {
        let t0 = Instant::now();
        let after = Duration::from_secs(10);
        let mut p = pacer(t0).rest_after(Some(after));
        assert!(!p.should_rest(t0, false), "nothing captured yet, but idle-timeout not passed since start");
        assert_eq!(p.should_sync(&1, false), Some(false));
        p.synced(t0, 1, ran(true, false));
        assert!(!p.should_rest(t0 + after * 2, false), "the last look captured something");
        assert_eq!(p.should_sync(&1, false), None);
        assert!(!p.should_rest(t0 + after - Duration::from_millis(1), false));
        assert!(p.should_rest(t0 + Duration::from_millis(1), true), "others wait to open: rest once quiet");
        p.watched(true);
        assert_eq!(p.next_look(t0 + Duration::from_millis(1)).at, t0 + after, "a quiet look comes when it may rest");
        assert!(p.should_rest(t0 + after, false));
        p.rested(None, t0 + after);
        assert!(!p.should_rest(t0 + after + Duration::from_secs(1), false), "a failed try waits another idle-timeout");
        assert!(p.should_rest(t0 + after * 2, false));
        p.rested(Some(2), t0 + after * 2);
        let t2 = t0 + after * 2;
        assert_eq!(p.next_look(t2), NextLook { at: t2 + RESTING_LOOK, listen: true }, "resting and watched");
        p.watched(false);
        assert_eq!(p.next_look(t2).at, t2 + MONITOR, "resting without a watch polls as before");
        p.watched(true);
        assert!(!p.should_rest(t0 + after * 3, false), "already resting");
        assert!(p.resting_unchanged(&2));
        p.woke();
        assert_eq!(p.should_sync(&2, false), None, "the rest's own checkpoint is no news");
        assert_eq!(p.should_sync(&3, false), Some(false), "a write is");
        assert!(!p.resting_unchanged(&3));
        p.synced(t0 + after * 3, 3, ran(true, false));
        assert!(!p.resting_unchanged(&3), "the sync opened the files");
        assert_eq!(p.should_sync(&3, false), None);
        assert!(p.should_rest(t0 + after * 4, false));
    }

    #[test]
    fn without_idle_timeout_a_database_never_rests() {
        let t0 = Instant::now();
        let mut p = pacer(t0).rest_after(Some(Duration::ZERO));
        assert_eq!(p.should_sync(&1, false), Some(false));
        p.synced(t0, 1, ran(false, false));
        assert!(!p.should_rest(t0 + Duration::from_secs(3600), false));
    }

    #[test]
    fn a_validation_mismatch_asks_for_the_next_look_at_once() {
        let t0 = Instant::now();
        let mut p = pacer(t0);
        p.should_sync(&1, false);
        p.synced(t0, 1, SyncOutcome::Ran { captured: false, in_flight: false, again: true });
        assert!(!p.next_look(t0).listen);
        assert_eq!(p.should_sync(&1, false), Some(false));
    }
}
