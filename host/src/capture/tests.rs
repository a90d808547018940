//! Capture and our checkpoints against a live writer: every frame is
//! captured before SQLite may reuse the WAL, so the chain never breaks.

use super::*;
use crate::checksum::page_hash;
use crate::db::CheckpointMode;
use rusqlite::Connection;

pub(super) fn app(path: &Path) -> Connection {
    let c = Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c.pragma_update(None, "journal_mode", "wal").unwrap();
    // Only sluice checkpoints, so each checkpoint below is ours.
    c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    c.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)").unwrap();
    c
}

pub(super) fn small_thresholds() -> CaptureConfig {
    CaptureConfig {
        min_checkpoint_page_count: 8,
        truncate_page_n: 40,
        checkpoint_interval: Duration::from_secs(3600),
        busy_timeout: Duration::from_secs(1),
    }
}

/// An application thread committing as fast as it can until stopped:
/// `blob`-byte rows, and with `deletes` a DELETE every seventh commit.
struct BusyWriter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl BusyWriter {
    fn start(path: &Path, blob: i64, deletes: bool) -> BusyWriter {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (path, flag) = (path.to_path_buf(), stop.clone());
        let thread = std::thread::spawn(move || {
            let conn = app(&path);
            let mut n = 0u64;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                conn.execute("INSERT INTO t(v) VALUES (randomblob(?1))", [blob]).unwrap();
                if deletes && n.is_multiple_of(7) {
                    conn.execute("DELETE FROM t WHERE id % 5 = 0", []).unwrap();
                }
                n += 1;
            }
            n
        });
        BusyWriter { stop, thread }
    }

    /// Stop it; how many commits it made.
    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// The checksum of the database as a fresh reader sees it now.
fn checksum_now(path: &Path) -> u64 {
    let db = Db::open(path, Duration::from_secs(5)).unwrap();
    let (page_size, pages) = db.page_info().unwrap();
    let mut hashes = PageHashes::new(page_size);
    db.for_each_page(pages, |pgno, page| {
        hashes.set(pgno, page_hash(pgno, page));
        Ok(())
    })
    .unwrap();
    hashes.checksum()
}

#[test]
fn truncate_checkpoint_empties_the_wal_and_the_chain_continues() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let conn = app(&path);
    let config = CaptureConfig { min_checkpoint_page_count: 1000, ..small_thresholds() };
    let mut cap = Capturer::open(&path, dir.path().join("meta"), config).unwrap();
    assert!(cap.sync(false).unwrap().gap.is_some(), "the first sync snapshots");
    let mut truncated = 0;
    for i in 0..30 {
        conn.execute("INSERT INTO t(v) VALUES (randomblob(9000))", []).unwrap();
        let report = cap.sync(false).unwrap();
        assert_eq!(report.gap, None, "sync {i}");
        if cap.maybe_checkpoint().unwrap() == Some(CheckpointMode::Truncate) {
            assert_eq!(fs::metadata(cap.db.wal_path()).unwrap().len(), 0, "nothing else writes, so TRUNCATE completes");
            truncated += 1;
        }
    }
    assert!(truncated > 0, "the WAL crossed truncate-page-n");
    assert_eq!(cap.state().checksum, checksum_now(&path));
}

/// The regression behind a flaky follow test: a checkpoint that copied
/// frames committed after the capture let the next write restart the WAL
/// over them, and the chain restarted with a snapshot.
#[test]
fn checkpoints_under_a_busy_writer_never_break_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(app(&path));
    let mut cap = Capturer::open(&path, dir.path().join("meta"), small_thresholds()).unwrap();
    cap.sync(false).unwrap();
    let writer = BusyWriter::start(&path, 3000, true);
    let (mut checkpoints, mut epochs) = (0, std::collections::HashSet::new());
    for i in 0..200 {
        let report = cap.sync(false).unwrap();
        assert_eq!(report.gap, None, "sync {i}");
        epochs.extend(cap.state().wal.map(|m| m.pos.salt));
        checkpoints += cap.maybe_checkpoint().unwrap().is_some() as u32;
        std::thread::sleep(Duration::from_millis(2));
    }
    let commits = writer.stop();
    assert_eq!(cap.sync(false).unwrap().gap, None);
    assert!(
        commits > 50 && checkpoints > 5 && epochs.len() > 2,
        "{commits} commits, {checkpoints} checkpoints, {} WAL epochs",
        epochs.len()
    );
    assert_eq!(cap.state().checksum, checksum_now(&path));
}

/// A sync that rewrites existing pages and appends new ones writes them as
/// two blocks split at the old size (what lets a compaction copy the
/// appended block as it is); one that only rewrites keeps one block.
#[test]
fn appended_pages_get_their_own_block() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let conn = app(&path);
    let mut cap = Capturer::open(&path, dir.path().join("meta"), small_thresholds()).unwrap();
    cap.sync(false).unwrap();
    let before = cap.state().db_pages;
    conn.execute("INSERT INTO t(v) VALUES (randomblob(20000))", []).unwrap();
    let report = cap.sync(false).unwrap();
    let blocks = crate::segment::SegmentReader::open(&report.segments[0].path).unwrap().blocks().unwrap();
    assert_eq!(blocks.len(), 2, "{blocks:?}");
    assert!(
        blocks[0].pgnos.iter().all(|&p| p <= before) && blocks[1].pgnos.iter().all(|&p| p > before),
        "split at page {before}: {blocks:?}"
    );
    conn.execute("UPDATE t SET v = zeroblob(10)", []).unwrap();
    let report = cap.sync(false).unwrap();
    let blocks = crate::segment::SegmentReader::open(&report.segments[0].path).unwrap().blocks().unwrap();
    assert_eq!(blocks.len(), 1, "{blocks:?}");
}

/// Validation matches the live database after an idle sync and after one
/// that captured something (it settles the view first), and a capture that went
/// wrong (here: a recorded page hash damaged, as a bug would) is found,
/// named, and healed by the next sync's snapshot.
#[test]
fn validation_finds_a_wrong_capture_and_heals_it_with_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let conn = app(&path);
    let mut cap = Capturer::open(&path, dir.path().join("meta"), small_thresholds()).unwrap();
    cap.sync(false).unwrap();
    conn.execute("INSERT INTO t(v) VALUES (randomblob(9000))", []).unwrap();
    cap.sync(false).unwrap();
    // That sync captured a commit: validation settles the view first.
    let txid = cap.state().txid;
    assert!(matches!(cap.validate().unwrap(), Validation::Matched { txid: t, .. } if t == txid));
    cap.sync(false).unwrap();
    assert!(matches!(cap.validate().unwrap(), Validation::Matched { txid: t, .. } if t == txid));
    // A page of the capture differs from the database.
    let mut hashes = cap.hashes.as_slice().to_vec();
    hashes[1] ^= 1;
    cap.hashes = PageHashes::from_vec(cap.state.page_size, hashes);
    cap.state.checksum = cap.hashes.checksum();
    cap.sync(false).unwrap();
    match cap.validate().unwrap() {
        Validation::Mismatch { txid: t, detail } => {
            assert!(t == txid && detail.contains("first differing page 2"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    let report = cap.sync(false).unwrap();
    assert!(report.gap.as_deref().is_some_and(|g| g.contains("validation")), "{:?}", report.gap);
    assert!(report.segments.iter().any(|s| s.name.is_snapshot()));
    cap.sync(false).unwrap();
    assert!(matches!(cap.validate().unwrap(), Validation::Matched { .. }));
    assert_eq!(cap.state().checksum, checksum_now(&path));
}

/// A commit frame written to the WAL but never published in the
/// wal-index (its writer was killed in between) is a transaction SQLite
/// treats as never committed: capture must not take it, and the chain
/// continues when the next writer overwrites it. (Found by the torture
/// suite's validation: a writer killed at that moment left a capture that
/// differed from the database on page 1.)
/// A database of one row in `dir`, its application connected, captured
/// once.
pub(super) fn captured_once(dir: &Path) -> (PathBuf, Connection, Capturer) {
    let path = dir.join("db");
    let conn = app(&path);
    conn.execute("INSERT INTO t(v) VALUES (randomblob(3000))", []).unwrap();
    let mut cap = Capturer::open(&path, dir.join("meta"), small_thresholds()).unwrap();
    cap.sync(false).unwrap();
    (path, conn, cap)
}

#[test]
fn a_commit_frame_sqlite_never_published_is_not_captured() {
    let dir = tempfile::tempdir().unwrap();
    let (path, conn, mut cap) = captured_once(dir.path());
    let txid = cap.state().txid;
    let mark = cap.state().wal.unwrap().pos;
    let (h, file) = cap.db.open_wal().unwrap().unwrap();
    let mut page = vec![0u8; h.page_size as usize];
    h.read_page(&file, mark.frames - 1, &mut page).unwrap();
    page[200] ^= 0xff;
    let forged = crate::wal::forge_commit_frame(&h, mark, 1, cap.state().db_pages, &page);
    file_write_at(&cap.db.wal_path(), &forged, h.frame_offset(mark.frames));
    let report = cap.sync(false).unwrap();
    assert_eq!((report.transactions, cap.state().txid), (0, txid), "the unpublished commit was captured");
    assert!(report.in_flight, "it is reported as in flight, to be looked at again");
    conn.execute("INSERT INTO t(v) VALUES (randomblob(100))", []).unwrap();
    let report = cap.sync(false).unwrap();
    assert_eq!((report.gap, report.transactions), (None, 1));
    assert_eq!(cap.state().checksum, checksum_now(&path));
}

/// Write `bytes` at `offset` of a WAL (SQLite takes no locks on it, so
/// this descriptor's close releases nothing).
fn file_write_at(path: &Path, bytes: &[u8], offset: u64) {
    use std::os::unix::fs::FileExt;
    fs::OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, offset).unwrap();
}

/// Validation is not starved by a writer that never pauses: it takes the
/// write lock for one small capture, then reads the pages without it.
#[test]
fn validation_runs_under_a_writer_that_never_pauses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(app(&path));
    let mut cap = Capturer::open(&path, dir.path().join("meta"), small_thresholds()).unwrap();
    cap.sync(false).unwrap();
    let writer = BusyWriter::start(&path, 300, false);
    // Each try may lose the lock to the writer (more often on a loaded
    // machine); without the lock none would ever run.
    let (mut matched, mut tries) = (0, 0);
    while matched < 3 && tries < 400 {
        tries += 1;
        cap.sync(false).unwrap();
        match cap.validate().unwrap() {
            Validation::Matched { .. } => matched += 1,
            Validation::NotNow => {}
            other => panic!("{other:?}"),
        }
    }
    writer.stop();
    // Without the write lock none would run: every sync captures something.
    assert!(matched >= 3, "{matched} of {tries} validations ran");
}

/// A writer may reset the WAL while a capture reads it when our read
/// transaction reads the database file alone (the log was wholly
/// checkpointed): the frames read after the reset are the new log's.
/// Such a capture is discarded and redone, never recorded.
#[test]
fn a_wal_reset_while_capture_reads_it_is_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let conn = app(&path);
    // One transaction writes many pages once each, so the first frames of
    // the log are the only copies of their pages; then it is checkpointed
    // whole, so our read transactions read the database file alone.
    conn.execute_batch("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40) INSERT INTO t(v) SELECT randomblob(1500) FROM n").unwrap();
    let (_, log, copied): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
    assert_eq!(log, copied, "the log was not wholly checkpointed");
    let mut cap = Capturer::open(&path, dir.path().join("meta"), small_thresholds()).unwrap();
    let before = cap.db.open_wal().unwrap().unwrap().0;
    // Between the first sync's scan and its page reads, the application
    // commits: SQLite restarts the log over the frames being read.
    cap.after_scan =
        Some(Box::new(move || conn.execute("INSERT INTO t(v) VALUES (randomblob(2000))", []).map(drop).unwrap()));
    let report = cap.sync(false).unwrap();
    let after = cap.db.open_wal().unwrap().unwrap().0;
    assert_ne!(before.salt, after.salt, "the WAL was not reset under the capture: the test proves nothing");
    assert!(report.gap.is_some(), "the first sync is a snapshot");
    assert_eq!(cap.state().checksum, checksum_now(&path), "the capture does not match the database");
    let report = cap.sync(false).unwrap();
    assert_eq!((report.gap, report.transactions), (None, 0), "the retried snapshot already holds the new commit");
}

/// The database's pages as a fresh reader sees them, concatenated.
pub(super) fn pages_now(path: &Path) -> Vec<u8> {
    let db = Db::open(path, Duration::from_secs(5)).unwrap();
    let (_, pages) = db.page_info().unwrap();
    let mut out = Vec::new();
    db.for_each_page(pages, |_, page| {
        out.extend_from_slice(page);
        Ok(())
    })
    .unwrap();
    out
}

/// What a restore of the spool's chain gives (the snapshot at TXID 1 and
/// every level-0 segment after it), every checksum verified.
pub(super) fn restore_spool(meta: &Path) -> Vec<u8> {
    use crate::segment::apply::{FileSink, apply};
    let mut entries = list_spool(&meta.join("spool")).unwrap();
    entries.sort_by_key(|e| e.name.min_txid);
    let out = tempfile::tempfile().unwrap();
    let mut hashes = PageHashes::new(4096);
    let mut sink = FileSink::new(out.try_clone().unwrap(), 4096);
    for e in &entries {
        let mut reader = crate::segment::SegmentReader::open(&e.path).unwrap();
        apply(&mut reader, &mut sink, Some(&mut hashes)).unwrap_or_else(|err| panic!("{}: {err}", e.name));
    }
    drop(sink.into_file().unwrap());
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut &out, &mut bytes).unwrap();
    bytes
}

/// A sluice that stopped (or was killed) after capturing TXID 2, while the
/// application went on committing and restarted the WAL: the capture
/// reopened on it, and the pages its restart must ship.
fn restart_after_a_wal_reset(dir: &Path, meddle: impl FnOnce(&Path)) -> (Capturer, SyncReport) {
    restart_after_a_wal_reset_with(dir, true, meddle)
}

/// The same, `known` saying whether every replica was listed first.
fn restart_after_a_wal_reset_with(dir: &Path, known: bool, meddle: impl FnOnce(&Path)) -> (Capturer, SyncReport) {
    let path = dir.join("db");
    let meta = dir.join("meta");
    let conn = app(&path);
    for _ in 0..200 {
        conn.execute("INSERT INTO t(v) VALUES (randomblob(3000))", []).unwrap();
    }
    let mut cap = Capturer::open(&path, meta.clone(), small_thresholds()).unwrap();
    assert!(cap.sync(false).unwrap().gap.is_some(), "the first sync snapshots");
    conn.execute("UPDATE t SET v = randomblob(3000) WHERE id = 7", []).unwrap();
    assert_eq!(cap.sync(false).unwrap().gap, None);
    drop(cap);
    conn.execute("UPDATE t SET v = randomblob(3000) WHERE id = 50", []).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    conn.execute("INSERT INTO t(v) VALUES (randomblob(100))", []).unwrap();
    meddle(&meta);
    let mut cap = Capturer::open(&path, meta, small_thresholds()).unwrap();
    cap.replicas_known(known);
    let report = cap.sync(false).unwrap();
    assert!(report.gap.is_some(), "the WAL was restarted while sluice was away");
    (cap, report)
}

#[test]
fn a_restart_after_a_wal_reset_ships_only_the_pages_that_changed() {
    let dir = tempfile::tempdir().unwrap();
    let (cap, report) = restart_after_a_wal_reset(dir.path(), |_| {});
    let [seg] = &report.segments[..] else { panic!("{:?}", report.segments) };
    assert_eq!((seg.name.level, seg.name.min_txid, seg.name.max_txid), (0, 3, 3), "the chain continues");
    let header = *crate::segment::SegmentReader::open(&seg.path).unwrap().header();
    assert!(header.page_count < 12, "{} of {} pages shipped", header.page_count, header.db_pages);
    assert_eq!(restore_spool(cap.meta().path()), pages_now(&dir.path().join("db")));
    assert_eq!(cap.state().checksum, checksum_now(&dir.path().join("db")));
}

/// Digests a crash left ahead of the state (entries for content the
/// replica never received) or garbled are never trusted: those pages ship.
#[test]
fn digests_that_do_not_match_the_state_are_never_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (cap, report) = restart_after_a_wal_reset(dir.path(), |meta| {
        let db = Db::open(&path, Duration::from_secs(5)).unwrap();
        let (_, pages) = db.page_info().unwrap();
        let mut ahead = digests::Writer::new(meta);
        db.for_each_page(pages, |pgno, page| {
            ahead.put(pgno, &digests::entry(pgno, page).0);
            Ok(())
        })
        .unwrap();
        ahead.flush();
        file_write_at(&digests::path(meta), &[0xa5; 40 * digests::ENTRY], 100 * digests::ENTRY as u64);
    });
    assert_eq!(report.segments.len(), 1);
    assert_eq!(restore_spool(cap.meta().path()), pages_now(&path));
}

/// Sluice closed last and nothing changed since: no segment at all, and
/// the chain goes on from the same TXID.
#[test]
fn a_restart_where_nothing_changed_ships_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let meta = dir.path().join("meta");
    let conn = app(&path);
    conn.execute("INSERT INTO t(v) VALUES (randomblob(30000))", []).unwrap();
    let mut cap = Capturer::open(&path, meta.clone(), small_thresholds()).unwrap();
    cap.sync(false).unwrap();
    drop((cap, conn));
    // The last connection to close checkpoints and removes the WAL.
    let last = Connection::open(&path).unwrap();
    last.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    drop(last);
    let mut cap = Capturer::open(&path, meta.clone(), small_thresholds()).unwrap();
    cap.replicas_known(true);
    let report = cap.sync(false).unwrap();
    assert!(report.gap.is_some() && report.segments.is_empty(), "{report:?}");
    assert_eq!(cap.state().txid, 1);
    let conn = app(&path);
    conn.execute("INSERT INTO t(v) VALUES (randomblob(300))", []).unwrap();
    let report = cap.sync(false).unwrap();
    assert_eq!((report.gap, report.segments[0].name.min_txid), (None, 2));
    assert_eq!(restore_spool(&meta), pages_now(&path));
}

/// A replica ahead of the state (another machine wrote it) has a base we
/// know nothing of: a snapshot, never a resume.
#[test]
fn a_replica_ahead_of_the_state_gets_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let conn = app(&path);
    conn.execute("INSERT INTO t(v) VALUES (randomblob(30000))", []).unwrap();
    let mut cap = Capturer::open(&path, dir.path().join("meta"), small_thresholds()).unwrap();
    cap.sync(false).unwrap();
    cap.continue_after(40);
    conn.execute("INSERT INTO t(v) VALUES (1)", []).unwrap();
    let report = cap.sync(false).unwrap();
    let [seg] = &report.segments[..] else { panic!("{:?}", report.segments) };
    assert_eq!((seg.name.level, seg.name.max_txid), (crate::segment::SNAPSHOT_LEVEL, 41));
}

/// The pages a segment holds.
fn segment_pages(path: &Path) -> Vec<u32> {
    let mut pages = Vec::new();
    crate::segment::SegmentReader::open(path)
        .unwrap()
        .for_each_page(|pgno, _| {
            pages.push(pgno);
            Ok(())
        })
        .unwrap();
    pages
}

/// A stored entry whose page hash is the state's but whose SHA-256 is not
/// the page's: the page ships (the 64-bit hash alone decides nothing).
#[test]
fn a_page_whose_digest_differs_ships_even_if_its_page_hash_matches() {
    let dir = tempfile::tempdir().unwrap();
    let (_, report) = restart_after_a_wal_reset(dir.path(), |meta| {
        file_write_at(&digests::path(meta), &[0x5a; 8], 2 * digests::ENTRY as u64);
    });
    let pages = segment_pages(&report.segments[0].path);
    assert!(pages.contains(&3) && pages.len() < 12, "{pages:?}");
}

/// A gap before every replica was listed may hide a replica ahead of the
/// state: a snapshot, which needs no base.
#[test]
fn a_gap_before_the_replicas_are_known_takes_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (_, report) = restart_after_a_wal_reset_with(dir.path(), false, |_| {});
    assert_eq!(report.segments[0].name.level, crate::segment::SNAPSHOT_LEVEL);
}

/// When most pages changed (here: the digests are gone), a snapshot
/// restarts the chain rather than a level-0 segment nearly its size.
#[test]
fn a_gap_where_most_pages_differ_takes_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (cap, report) = restart_after_a_wal_reset(dir.path(), |meta| {
        let len = fs::metadata(digests::path(meta)).unwrap().len() as usize;
        file_write_at(&digests::path(meta), &vec![0; len], 0);
    });
    assert_eq!(report.segments[0].name.level, crate::segment::SNAPSHOT_LEVEL);
    assert_eq!(cap.state().checksum, checksum_now(&dir.path().join("db")));
}
