//! A quiet database rests (DESIGN.md decision 29): after `idle-timeout`
//! with nothing to capture, the replicating process holds no descriptor of
//! the database, its `-wal` or its `-shm` (so no SQLite lock either), nor
//! of sluice's state beside them, and a
//! write from another process wakes it, ships, and it rests again. The
//! descriptors are read from `/proc/PID/fd`, from outside; what the
//! replicas hold is checked by restoring them page for page.

mod common;

use common::*;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const DBS: usize = 12;
const PAGE: u32 = 4096;

/// The files under `dir` that process `pid` has open: the databases,
/// their `-wal` and `-shm`, and sluice's state beside them (the state
/// slot, the page digests, the replicas' records).
fn open_database_files(pid: u32, dir: &Path) -> Vec<PathBuf> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok()).filter(|target| target.starts_with(dir)).collect()
}

fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Wait until `pid` holds none of the database files under `dir`.
fn wait_until_resting(pid: u32, dir: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let open = open_database_files(pid, dir);
        if open.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: still open after 30 s: {open:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until the replica at `url` holds a TXID past `after`; on failure,
/// say what the replicator logged (`log`).
fn wait_for_txid(url: &str, after: u64, log: &Path) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let txid = replica_txid(url);
        if txid > after {
            return txid;
        }
        if Instant::now() >= deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{url} stayed at TXID {txid}; the replicator logged:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The replicator, killed if the test fails before stopping it.
struct Replicator(Option<std::process::Child>);

impl Drop for Replicator {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Start `sluice replicate -config config`, logging to `log`.
fn replicate(config: &Path, log: &Path) -> (u32, Replicator) {
    let child = sluice()
        .args(["replicate", "-config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    (child.id(), Replicator(Some(child)))
}

#[test]
fn an_idle_database_holds_no_descriptor_and_a_write_wakes_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut config = String::from("dbs:\n");
    let mut urls = Vec::new();
    let mut held = Vec::new();
    for i in 0..DBS {
        let db = data.join(format!("t{i}.db"));
        let conn = create_db(&db, PAGE);
        conn.execute("INSERT INTO t(a, b) VALUES ('first', randomblob(3000))", []).unwrap();
        // Half the applications stay connected, half have closed.
        if i % 2 == 0 {
            held.push((db.clone(), conn));
        }
        let url = format!("file://{}", dir.path().join(format!("replica{i}")).display());
        config.push_str(&format!(
            "  - path: {}\n    idle-timeout: 300ms\n    monitor-interval: 100ms\n    replica:\n      url: {url}\n      sync-interval: 100ms\n",
            db.display()
        ));
        urls.push(url);
    }
    let config_path = dir.path().join("sluice.yml");
    std::fs::write(&config_path, config).unwrap();
    let log = dir.path().join("sluice.log");
    let (pid, mut replicator) = replicate(&config_path, &log);
    let mut txids: Vec<u64> = urls.iter().map(|u| wait_for_txid(u, 0, &log)).collect();
    wait_until_resting(pid, &data, "after the first snapshots");
    eprintln!("{DBS} resting databases: the process holds {} descriptors in all", descriptors(pid));

    // Writes from this process (another than sluice's): two held
    // connections and two fresh ones, which close again (the last
    // connection to close checkpoints the WAL away before sluice wakes).
    for i in [0, 2, 1, 3] {
        let db = data.join(format!("t{i}.db"));
        let write = |conn: &Connection| {
            conn.execute("INSERT INTO t(a, b) VALUES ('woke', randomblob(5000))", []).unwrap();
            conn.execute("UPDATE t SET b = randomblob(100) WHERE id = 1", []).unwrap();
        };
        match held.iter().find(|(p, _)| *p == db) {
            Some((_, conn)) => write(conn),
            None => write(&Connection::open(&db).unwrap()),
        }
    }
    for i in [0, 1, 2, 3] {
        txids[i] = wait_for_txid(&urls[i], txids[i], &log);
        let db = data.join(format!("t{i}.db"));
        // Both commits are in the replica, however they were captured.
        let want = image(&Connection::open(&db).unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = restore_image(&urls[i], &dir.path().join(format!("restored{i}.db")), None, PAGE);
            if got == want {
                break;
            }
            if Instant::now() >= deadline {
                let _ = dir.keep();
                panic!("database {i}: the replica never caught up:\n{}", std::fs::read_to_string(&log).unwrap());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    wait_until_resting(pid, &data, "after the writes");
    for (i, url) in urls.iter().enumerate().skip(4) {
        assert_eq!(replica_txid(url), txids[i], "database {i} was not written and shipped nothing");
    }
    let child = replicator.0.take().unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(out.status.success() && !log.contains("ERROR"), "{}:\n{log}", out.status);
}

/// The snapshots in the replica at `url` (a `file://` URL), by name.
fn snapshots(url: &str) -> Vec<String> {
    let dir = Path::new(url.trim_start_matches("file://")).join("0009");
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> =
        entries.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned())).collect();
    names.sort();
    names
}

/// A resting database's replica whose `snapshot-interval` passes gets its
/// snapshot then, not at the next look (minutes away while resting): the
/// replica wakes the database's loop, which takes it and rests again. A
/// snapshot that would hold nothing new is not taken: an idle database
/// keeps one.
#[test]
fn a_snapshot_falling_due_while_resting_is_taken_then() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let db = data.join("s.db");
    let conn = create_db(&db, PAGE);
    conn.execute("INSERT INTO t(a, b) VALUES ('first', randomblob(3000))", []).unwrap();
    drop(conn);
    let url = format!("file://{}", dir.path().join("replica").display());
    let config = format!(
        "dbs:\n  - path: {}\n    idle-timeout: 300ms\n    replica:\n      url: {url}\n      sync-interval: 100ms\n      snapshot-interval: 3s\n",
        db.display()
    );
    let config_path = dir.path().join("sluice.yml");
    std::fs::write(&config_path, config).unwrap();
    let log = dir.path().join("sluice.log");
    let (pid, mut replicator) = replicate(&config_path, &log);
    let first_txid = wait_for_txid(&url, 0, &log);
    wait_until_resting(pid, &data, "after the first snapshot");
    let first = snapshots(&url);
    assert_eq!(first.len(), 1, "one snapshot to begin with: {first:?}");
    // A write after the snapshot, shipped as level 0; then rest again.
    let conn = Connection::open(&db).unwrap();
    conn.execute("INSERT INTO t(a, b) VALUES ('second', randomblob(3000))", []).unwrap();
    drop(conn);
    wait_for_txid(&url, first_txid, &log);
    wait_until_resting(pid, &data, "after the write");
    let deadline = Instant::now() + Duration::from_secs(20);
    while snapshots(&url).len() < 2 {
        if Instant::now() >= deadline {
            panic!(
                "no second snapshot 20 s after the first (interval 3 s):\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_until_resting(pid, &data, "after the second snapshot");
    // Nothing new since: no third, however many intervals pass.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(snapshots(&url).len(), 2, "a snapshot of nothing new was taken");
    let child = replicator.0.take().unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(out.status.success() && !log.contains("ERROR"), "{}:\n{log}", out.status);
    // The first snapshot and the one due: no loop retaking it.
    let snapshot_syncs = log.matches("captured 0 transactions").count();
    assert!(snapshot_syncs <= 3, "{snapshot_syncs} syncs took a snapshot:\n{log}");
    let want = image(&Connection::open(&db).unwrap());
    assert_eq!(restore_image(&url, &dir.path().join("restored.db"), None, PAGE), want);
}
