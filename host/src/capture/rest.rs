//! Resting: an idle database whose every commit is captured lets go of
//! its files (DESIGN.md, decision 29). Our three connections hold the
//! database and its `-wal` open, and the `-shm`, beside the state slot and
//! the page digests: nine descriptors per database, which at thousands of
//! tenants is the process's whole limit.
//!
//! Letting go also lets go of the read lock that proves continuity while
//! sluice runs (decision 2), so the proof becomes the one a restart uses
//! (decision 4): the database file untouched since a moment when
//! everything SQLite had published was captured. Only a checkpoint writes
//! the database file, and frames leave the WAL only once checkpointed, so
//! an untouched file means every commit since is still in the WAL (from
//! the recorded frame in the same log, or from the first frame of a log
//! that restarted). To make that moment clean, resting holds SQLite's
//! write lock while it checks that nothing new was published, copies the
//! whole WAL into the database, and records the file's stamp.

use super::{CaptureError, Capturer, PASSIVE_LOCK_WAIT, io_err};
use crate::fsutil::{coarse_clock_past, file_stamp, fine_grained};
use std::time::{Duration, Instant};

/// Longest wait, under the write lock, for the kernel's coarse clock to
/// pass the database file's modification time (see `clock_passed`). One
/// tick is 1-10 ms depending on the kernel's HZ; more means the clock is
/// odd (stepped back), and resting is simply not tried now.
const STAMP_SETTLE_MAX: Duration = Duration::from_millis(30);

/// Databases larger than this keep their files open however quiet. A
/// write while resting can still lose its frames to a checkpoint before
/// sluice wakes (the application closing its last connection checkpoints
/// the WAL and deletes it); the gap is then bridged by reading every page
/// and shipping those that differ (decision 19). Reading 64 MiB costs tens
/// of milliseconds; reading a 10 GB database at every cron-job write
/// would not be worth eight descriptors.
pub const REST_MAX_BYTES: u64 = 64 << 20;

impl Capturer {
    /// Whether our connections are closed (`rest`).
    pub fn resting(&self) -> bool {
        self.db.resting()
    }

    /// Close the database's files if every commit is captured and the WAL
    /// can be copied into the database whole: `Ok(Some(looked))` if it
    /// rested, where `looked` is what `look` returned just before the files
    /// were let go (no write can come between). Call after a sync that
    /// found nothing new. `Ok(None)` (a writer kept the write lock or
    /// committed meanwhile, a gap is pending, the database is large) means
    /// try again later; the files stay open and nothing changed.
    pub fn rest<S>(&mut self, look: impl FnOnce() -> S) -> Result<Option<S>, CaptureError> {
        let bytes = self.state.db_pages as u64 * self.state.page_size as u64;
        if self.db.resting() || self.gap.is_some() || !self.live || bytes > REST_MAX_BYTES {
            return Ok(None);
        }
        if !self.db.hold_write_lock(PASSIVE_LOCK_WAIT)? {
            return Ok(None);
        }
        let settled = self.settle_locked();
        let stamp = match settled {
            Ok(Some(stamp)) => stamp,
            other => {
                self.db.release_write_lock()?;
                return other.map(|_| None);
            }
        };
        let looked = look();
        self.state.db_stamp = Some(stamp);
        // Without our read lock the next WAL may be any (one created after
        // the application's last connection deleted this one picks random
        // salts): only the untouched file proves continuity from here.
        self.state.next_salt1 = None;
        let saved = self.meta.save(&self.state, &self.hashes).map_err(io_err(self.meta.path()));
        self.meta.close_files();
        self.digests.close();
        // Whether or not the state was saved, the files are closed: an
        // unsaved stamp only means the wake proves nothing and bridges.
        self.live = false;
        self.view_is_state = false;
        // Its zstd context is the largest thing an idle database keeps.
        self.compressor = None;
        self.db.rest()?;
        saved?;
        tracing::debug!(database = %self.db.path().display(), txid = self.state.txid, "idle: the database's files are closed until its next write");
        Ok(Some(looked))
    }

    /// Under the write lock: if nothing was published past the capture,
    /// copy the whole WAL into the database and return the database
    /// file's stamp once the clock has moved past it; `None` if resting
    /// cannot be now.
    fn settle_locked(&mut self) -> Result<Option<(u64, i64)>, CaptureError> {
        let captured = match (self.state.wal, self.db.published()) {
            (Some(mark), Some(p)) => p.salt == mark.pos.salt && p.max_frame == mark.pos.frames,
            (None, published) => published.is_none_or(|p| p.max_frame == 0),
            (Some(_), None) => false,
        };
        if !captured {
            return Ok(None);
        }
        // The view now sees every commit, all captured: the checkpoint may
        // copy all of it.
        self.db.refresh_read_lock()?;
        if self.state.wal.is_some_and(|m| m.pos.frames > 0) && !self.checkpoint_all_locked()?.copied_all() {
            return Ok(None);
        }
        let path = self.db.path().to_path_buf();
        let stamp = file_stamp(&path)
            .ok_or_else(|| CaptureError::Io { path: path.clone(), source: std::io::Error::other("cannot stat") })?;
        if !fine_grained(stamp) {
            // Times in whole seconds: a write in the same second would
            // leave the stamp as it is, so resting could prove nothing.
            return Ok(None);
        }
        // The WAL's time too: the loop tells a write while resting by the
        // files' stamps, and the next write restarts the WAL at its first
        // frame, which may leave its size as it was.
        let wal = file_stamp(&self.db.wal_path()).map_or(i64::MIN, |(_, mtime)| mtime);
        Ok(clock_passed(stamp.1.max(wal)).then_some(stamp))
    }
}

/// Wait, up to `STAMP_SETTLE_MAX`, until the kernel's coarse real-time
/// clock is past `mtime_ns`. A file's times are taken from that clock, so
/// every later write to the file gets a later time: a checkpoint in the
/// same clock tick as the stamp cannot leave the stamp unchanged.
fn clock_passed(mtime_ns: i64) -> bool {
    let started = Instant::now();
    loop {
        if coarse_clock_past(mtime_ns) {
            return true;
        }
        if started.elapsed() >= STAMP_SETTLE_MAX {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{app, captured_once, pages_now, restore_spool, small_thresholds};
    use super::*;

    /// A database captured and resting, its application still connected.
    fn rested(dir: &std::path::Path) -> (rusqlite::Connection, Capturer) {
        let path = dir.join("db");
        let conn = app(&path);
        for _ in 0..50 {
            conn.execute("INSERT INTO t(v) VALUES (randomblob(3000))", []).unwrap();
        }
        let mut cap = Capturer::open(&path, dir.join("meta"), small_thresholds()).unwrap();
        cap.replicas_known(true);
        assert!(cap.sync(false).unwrap().gap.is_some(), "the first sync snapshots");
        conn.execute("UPDATE t SET v = randomblob(3000) WHERE id = 7", []).unwrap();
        assert_eq!(cap.sync(false).unwrap().transactions, 1);
        assert_eq!(cap.rest(|| "looked").unwrap(), Some("looked"));
        assert!(cap.resting());
        (conn, cap)
    }

    #[test]
    fn a_write_after_resting_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, mut cap) = rested(dir.path());
        conn.execute("UPDATE t SET v = randomblob(3000) WHERE id = 9", []).unwrap();
        conn.execute("INSERT INTO t(v) VALUES (randomblob(10))", []).unwrap();
        let report = cap.sync(false).unwrap();
        assert!(!cap.resting());
        assert_eq!(report.gap, None, "the WAL restarted, but the database file was not touched");
        assert_eq!((report.transactions, cap.state().txid), (2, 3));
        assert_eq!(restore_spool(cap.meta().path()), pages_now(&dir.path().join("db")));
    }

    #[test]
    fn a_checkpoint_while_resting_is_a_gap_bridged_by_the_changed_pages() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, mut cap) = rested(dir.path());
        conn.execute("UPDATE t SET v = randomblob(3000) WHERE id = 9", []).unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
        conn.execute("INSERT INTO t(v) VALUES (randomblob(10))", []).unwrap();
        let report = cap.sync(false).unwrap();
        assert!(report.gap.is_some(), "a checkpoint copied frames sluice never saw");
        let [seg] = &report.segments[..] else { panic!("{:?}", report.segments) };
        assert_eq!((seg.name.level, seg.name.min_txid), (0, 3), "the chain continues with the changed pages");
        assert_eq!(restore_spool(cap.meta().path()), pages_now(&dir.path().join("db")));
    }

    /// The application's last connection, closing, checkpoints its
    /// commit into the database and deletes the WAL before sluice wakes
    /// (tests/idle.rs found this missed: no WAL and no mark looked like
    /// nothing to capture).
    #[test]
    fn a_commit_checkpointed_away_by_the_last_connection_is_bridged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let (conn, mut cap) = rested(dir.path());
        // Rest again with an empty WAL: no mark in the state.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
        cap.sync(false).unwrap();
        assert_eq!(cap.state().wal, None);
        assert!(cap.rest(|| ()).unwrap().is_some());
        drop(conn);
        let last = rusqlite::Connection::open(&path).unwrap();
        last.execute("UPDATE t SET v = randomblob(3000) WHERE id = 3", []).unwrap();
        drop(last);
        assert!(!crate::db::wal_path(&path).exists(), "the last connection deleted the WAL");
        let report = cap.sync(false).unwrap();
        assert!(report.gap.is_some(), "the database changed under a resting capture");
        assert_eq!(restore_spool(cap.meta().path()), pages_now(&path));
    }

    #[test]
    fn a_commit_not_captured_yet_keeps_the_files_open() {
        let dir = tempfile::tempdir().unwrap();
        let (_, conn, mut cap) = captured_once(dir.path());
        conn.execute("INSERT INTO t(v) VALUES (randomblob(3000))", []).unwrap();
        assert_eq!(cap.rest(|| ()).unwrap(), None);
        assert!(!cap.resting());
        assert_eq!(cap.sync(false).unwrap().transactions, 1);
        assert_eq!(cap.rest(|| ()).unwrap(), Some(()));
    }

    #[test]
    fn a_restart_while_resting_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, cap) = rested(dir.path());
        drop(cap);
        conn.execute("UPDATE t SET v = randomblob(3000) WHERE id = 11", []).unwrap();
        let mut cap = Capturer::open(&dir.path().join("db"), dir.path().join("meta"), small_thresholds()).unwrap();
        let report = cap.sync(false).unwrap();
        assert_eq!((report.gap, report.transactions), (None, 1));
        assert_eq!(restore_spool(cap.meta().path()), pages_now(&dir.path().join("db")));
    }
}
