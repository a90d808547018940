//! The replicator keeps SQLite's locks through every kind of sync.
//!
//! SQLite's locks are POSIX advisory locks, owned by the process: closing
//! any descriptor of the `-shm` (or the database) in the replicating
//! process releases the locks its own connections hold. Without the
//! `-shm`'s dead-man-switch byte another connection re-initialises the
//! wal-index under sluice's mapping (SIGBUS), and without a read mark the
//! application can checkpoint and restart the WAL over frames sluice has
//! not captured (a corrupt replica). This test watches `/proc/locks` from
//! outside (it opens none of the files) while an application in this
//! process (another process than sluice's) drives every kind of sync:
//! the first snapshot of a database without a `-wal`, level-0 syncs,
//! sluice's passive and truncating checkpoints, the application's own
//! checkpoints in all four modes, VACUUM, reconnects, a snapshot on an
//! emptied WAL, and the shrink-and-truncate that used to kill sluice with
//! SIGBUS.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// SQLite's lock bytes (sqlite.org/walformat.html, os_unix.c): in the
/// `-shm`, the dead-man switch and the read marks; in the database, the
/// range of the SHARED lock every connection to a WAL database holds.
const DMS_BYTE: u64 = 128;
const READ_MARKS: std::ops::RangeInclusive<u64> = 123..=127;
const SHARED_FIRST: u64 = 0x4000_0002;

/// One POSIX lock from `/proc/locks`: inode, first and last byte.
type Lock = (u64, u64, u64);

fn posix_locks_of(pid: u32) -> Vec<Lock> {
    let text = std::fs::read_to_string("/proc/locks").unwrap();
    text.lines()
        .filter(|l| !l.contains("->"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // "1: POSIX  ADVISORY  READ 13016 fe:00:10010852 124 124"
            if f.len() < 8 || f[1] != "POSIX" || f[4] != pid.to_string() {
                return None;
            }
            let inode = f[5].rsplit(':').next()?.parse().ok()?;
            let end = if f[7] == "EOF" { u64::MAX } else { f[7].parse().ok()? };
            Some((inode, f[6].parse().ok()?, end))
        })
        .collect()
}

/// What is missing from sluice's locks, if anything.
fn missing_locks(pid: u32, db: &Path) -> Vec<&'static str> {
    let (Ok(db_meta), Ok(shm_meta)) = (std::fs::metadata(db), std::fs::metadata(db.with_file_name("app.db-shm")))
    else {
        return vec!["the database or its -shm is gone"];
    };
    let locks = posix_locks_of(pid);
    let holds = |inode: u64, byte: u64| locks.iter().any(|&(i, s, e)| i == inode && s <= byte && byte <= e);
    let mut missing = Vec::new();
    if !holds(shm_meta.ino(), DMS_BYTE) {
        missing.push("the -shm dead-man switch (byte 128)");
    }
    if !READ_MARKS.clone().any(|b| holds(shm_meta.ino(), b)) {
        missing.push("a -shm read mark (bytes 123-127)");
    }
    if !holds(db_meta.ino(), SHARED_FIRST) {
        missing.push("the database's SHARED lock");
    }
    missing
}

/// Watch sluice's locks every few milliseconds until stopped; a lock
/// missing in two samples in a row is recorded with the step then running.
fn watch_locks(
    pid: u32,
    db: std::path::PathBuf,
    step: Arc<Mutex<&'static str>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, BTreeSet<String>)> {
    std::thread::spawn(move || {
        let (mut samples, mut seen) = (0, BTreeSet::new());
        let mut previous: Vec<&str> = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let missing = missing_locks(pid, &db);
            for m in &missing {
                if previous.contains(m) {
                    seen.insert(format!("{m} during: {}", step.lock().unwrap()));
                }
            }
            previous = missing;
            samples += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        (samples, seen)
    })
}

/// A database written and closed (so it has no `-wal`), in a fresh
/// directory, and the URL of a replica beside it.
fn closed_db() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    drop(create_db(&db, 4096));
    assert!(!dir.path().join("app.db-wal").exists());
    let url = format!("file://{}", dir.path().join("replica").display());
    (dir, db, url)
}

/// Start `sluice replicate` on `db` (quick intervals, plus the given
/// database and replica config lines) and wait for its first snapshot.
fn start_and_wait_for_snapshot(db: &Path, url: &str, db_lines: &str, replica_lines: &str) -> std::process::Child {
    let config = db.with_file_name("sluice.yml");
    let text = format!(
        "dbs:\n  - path: {}\n    monitor-interval: 20ms\n{db_lines}    replicas:\n      - url: {url}\n        sync-interval: 50ms\n{replica_lines}",
        db.display()
    );
    std::fs::write(&config, text).unwrap();
    let child = sluice()
        .args(["replicate", "-config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while replica_txid(url) == 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "no first snapshot");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// The application's own checkpoint in `mode`. RESTART and TRUNCATE wait
/// for readers (sluice is one) only briefly, then report busy, as they
/// would with any other reader.
fn app_checkpoint(conn: &rusqlite::Connection, mode: &str) {
    conn.busy_timeout(Duration::from_millis(100)).unwrap();
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(())).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
}

/// The recipe: delete a third of the rows, TRUNCATE, one more row.
fn shrink_truncate_insert(conn: &rusqlite::Connection) {
    conn.execute("DELETE FROM t WHERE id % 3 = 0", []).unwrap();
    app_checkpoint(conn, "TRUNCATE");
    conn.execute("INSERT INTO t(a) VALUES ('after')", []).unwrap();
}

#[test]
fn sqlite_locks_are_held_through_every_kind_of_sync() {
    let (dir, db, url) = closed_db();
    let sluice_proc = start_and_wait_for_snapshot(
        &db,
        &url,
        "    checkpoint-interval: 1s\n    min-checkpoint-page-count: 30\n    truncate-page-n: 120\n",
        "        snapshot-interval: 1s\n",
    );
    let pid = sluice_proc.id();
    let step = Arc::new(Mutex::new("the first snapshot (no -wal)"));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_locks(pid, db.clone(), step.clone(), stop.clone());
    let set = |s: &'static str| *step.lock().unwrap() = s;
    let pause = || std::thread::sleep(Duration::from_millis(300));
    pause();

    let mut conn = create_db(&db, 4096);
    set("level-0 syncs");
    for i in 0..20 {
        conn.execute("INSERT INTO t(a) VALUES (?1)", [format!("row {i}")]).unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    pause();
    set("sluice's passive and truncating checkpoints");
    for _ in 0..4 {
        conn.execute("INSERT INTO t(a, b) SELECT 'big', randomblob(3000) FROM t LIMIT 60", []).unwrap();
        pause();
    }
    for mode in ["PASSIVE", "FULL", "RESTART", "TRUNCATE"] {
        set(match mode {
            "PASSIVE" => "the application's PASSIVE checkpoint",
            "FULL" => "the application's FULL checkpoint",
            "RESTART" => "the application's RESTART checkpoint",
            _ => "the application's TRUNCATE checkpoint",
        });
        conn.execute("INSERT INTO t(a) VALUES ('before checkpoint')", []).unwrap();
        app_checkpoint(&conn, mode);
        pause();
    }
    set("a snapshot while the WAL is empty");
    std::thread::sleep(Duration::from_millis(1500));
    set("VACUUM");
    conn.execute_batch("VACUUM").unwrap();
    pause();
    set("the application reconnecting");
    drop(conn);
    pause();
    conn = create_db(&db, 4096);
    conn.execute("INSERT INTO t(a) VALUES ('reconnected')", []).unwrap();
    pause();
    set("a DELETE of a third, TRUNCATE, one more row");
    shrink_truncate_insert(&conn);
    std::thread::sleep(Duration::from_millis(1500));

    stop.store(true, Ordering::SeqCst);
    let (samples, lost) = watcher.join().unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let out = sluice_proc.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.signal().is_none() && out.status.success(), "sluice ended with {}:\n{log}", out.status);
    assert!(samples > 100, "only {samples} samples of /proc/locks");
    assert!(
        lost.is_empty(),
        "sluice lost SQLite's locks ({samples} samples):\n{}\n{log}",
        lost.into_iter().collect::<Vec<_>>().join("\n")
    );
    let out = dir.path().join("restored.db");
    let got = restore_image(&url, &out, None, 4096);
    assert_same_image(&image(&conn), &got, "latest restore vs the live database");
}

/// The SIGBUS: the WAL grows past one wal-index region (4,096
/// frames), then the application opens a new connection and shrinks the
/// database. Had sluice lost its dead-man-switch lock, that connection
/// would find itself alone, truncate and re-initialise the `-shm`, and
/// sluice's next look at the second region (its checkpoint) would fault.
#[test]
fn a_new_connection_after_a_large_wal_does_not_kill_sluice() {
    let (dir, db, url) = closed_db();
    let mut child = start_and_wait_for_snapshot(&db, &url, "", "");
    let conn = create_db(&db, 4096);
    conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    // One transaction of ~6,000 pages: the wal-index needs two regions.
    conn.execute("INSERT INTO t(a, b) SELECT 'bulk', randomblob(3500) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 6000) SELECT x FROM c)", []).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(conn);
    let conn = create_db(&db, 4096);
    shrink_truncate_insert(&conn);
    // Long enough for sluice's checkpoints to walk the whole wal-index.
    std::thread::sleep(Duration::from_secs(3));
    if let Some(status) = child.try_wait().unwrap() {
        let mut log = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
        panic!("sluice died with {status}:\n{log}");
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "sluice ended with {}:\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let got = restore_image(&url, &dir.path().join("restored.db"), None, 4096);
    assert_same_image(&image(&conn), &got, "latest restore vs the live database");
}

/// A replica directory that holds the database would let its plugin (code
/// running in sluice's process) reach the database's files: refused.
#[test]
fn a_replica_directory_holding_the_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    drop(create_db(&db, 4096));
    let out = sluice()
        .args(["replicate", "-once"])
        .arg(&db)
        .arg(format!("file://{}", dir.path().display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("holds the database"), "{}\n{stderr}", out.status);
}
