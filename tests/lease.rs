//! One writer per replica (DESIGN.md decision 17), end to end: real
//! `sluice replicate` processes contending for one file replica while
//! SQLite writers (this test process) commit, then restores compared
//! page for page with the database that should be in the replica.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A database's config: one file replica at `url` with `lease`, and its
/// own meta directory if `meta` is given (as on another host).
fn config(dir: &Path, name: &str, db: &Path, url: &str, lease: &str, meta: Option<&Path>) -> PathBuf {
    let meta = meta.map_or(String::new(), |m| format!("    meta-path: {}\n", m.display()));
    let text = format!(
        "dbs:\n  - path: {}\n    monitor-interval: 50ms\n{meta}    replicas:\n      - url: {url}\n        sync-interval: 100ms\n        lease-timeout: {lease}\n",
        db.display()
    );
    let path = dir.join(format!("{name}.yml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Start `sluice replicate -config`, its log in `log`.
fn start(config: &Path, log: &Path) -> Child {
    sluice()
        .args(["replicate", "-config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start sluice replicate")
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling our own child, not yet reaped.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// SIGINT and wait for the exit.
fn interrupt(mut child: Child) -> ExitStatus {
    signal(&child, libc::SIGINT);
    child.wait().unwrap()
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Wait until `log` contains `needle`; its text, or a panic with it.
fn wait_for_log(log: &Path, needle: &str, within: Duration) -> String {
    let until = Instant::now() + within;
    loop {
        let text = read(log);
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < until, "{} never said {needle:?}:\n{text}", log.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Keep `conn` committing until the replica holds more than `after`.
fn write_until_shipped(conn: &rusqlite::Connection, url: &str, after: u64, within: Duration) -> u64 {
    let mut rng = seeded(after + 5);
    let until = Instant::now() + within;
    loop {
        workload(conn, &mut rng, 5);
        let txid = replica_txid(url);
        if txid > after {
            return txid;
        }
        assert!(Instant::now() < until, "the replica stayed at TXID {after} for {within:?}");
    }
}

/// Write for `how_long`.
fn write_for(conn: &rusqlite::Connection, seed: u64, how_long: Duration) {
    let mut rng = seeded(seed);
    let until = Instant::now() + how_long;
    while Instant::now() < until {
        workload(conn, &mut rng, 5);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The replica's latest restore must be `conn`'s database exactly, and
/// pass SQLite's integrity check.
fn assert_restores_to(conn: &rusqlite::Connection, url: &str, out: &Path, what: &str) {
    let want = image(conn);
    let got = restore_image(url, out, None, 4096);
    assert_same_image(&want, &got, what);
    let check: String =
        rusqlite::Connection::open(out).unwrap().query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok", "{what}");
}

/// Two different databases configured with one replica path: the second
/// process ships nothing and says who holds the replica, the first keeps
/// replicating, and the replica restores to the first database exactly.
/// (Before the lease, the second continued after the first's TXIDs with a
/// snapshot: the replica restored to database two.)
#[test]
fn a_second_database_on_the_same_replica_is_refused_and_the_first_keeps_replicating() {
    let dir = tempfile::tempdir().unwrap();
    let (db1, db2) = (dir.path().join("one.db"), dir.path().join("two.db"));
    let (conn1, conn2) = (create_db(&db1, 4096), create_db(&db2, 4096));
    let url = format!("file://{}", dir.path().join("replica").display());
    // A short lease: the refusal must outlast many of its timeouts.
    let (c1, c2) =
        (config(dir.path(), "one", &db1, &url, "1s", None), config(dir.path(), "two", &db2, &url, "1s", None));
    let (log1, log2) = (dir.path().join("one.log"), dir.path().join("two.log"));
    let first = start(&c1, &log1);
    let shipped = write_until_shipped(&conn1, &url, 0, Duration::from_secs(60));
    let second = start(&c2, &log2);
    let mut rng = seeded(2);
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        workload(&conn1, &mut rng, 5);
        workload(&conn2, &mut rng, 5);
        std::thread::sleep(Duration::from_millis(20));
    }
    let later = write_until_shipped(&conn1, &url, shipped, Duration::from_secs(30));
    assert!(later > shipped, "the first process keeps replicating");
    let status = interrupt(second);
    let log = read(&log2);
    assert!(!status.success(), "the refused process must not exit 0 with nothing shipped:\n{log}");
    let holder = format!("process {} on host", first.id());
    assert!(
        log.contains(&holder) && log.contains(&format!("database {}", db1.display())),
        "the refusal names the holder:\n{log}"
    );
    let warnings = log.lines().filter(|l| l.contains("WARN") && l.contains("holds this replica's lease")).count();
    assert_eq!(warnings, 1, "one warning, not one per retry:\n{log}");
    write_for(&conn1, 3, Duration::from_millis(500));
    let status = interrupt(first);
    assert!(status.success(), "the holder exits cleanly:\n{}", read(&log1));
    assert_restores_to(&conn1, &url, &dir.path().join("out.db"), &format!("database one\n{}", read(&log1)));
}

/// A holder that stops answering (SIGSTOP, as a frozen host would) is
/// taken over by the same database's next process once its lease stayed
/// unrenewed for the timeout, and not before; kill -9 then ends the old
/// one, and the new one continues: the replica restores to the database
/// exactly.
#[test]
fn a_frozen_holder_is_taken_over_after_the_timeout_and_replication_continues() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, 4096);
    let url = format!("file://{}", dir.path().join("replica").display());
    let cfg = config(dir.path(), "app", &db, &url, "2s", None);
    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let mut a = start(&cfg, &log_a);
    let shipped = write_until_shipped(&conn, &url, 0, Duration::from_secs(60));
    signal(&a, libc::SIGSTOP);
    let frozen = Instant::now();
    let b = start(&cfg, &log_b);
    wait_for_log(&log_b, "holds this replica's lease", Duration::from_secs(30));
    write_for(&conn, 7, Duration::from_millis(500));
    let log = wait_for_log(&log_b, "took over the replica's lease", Duration::from_secs(30));
    assert!(frozen.elapsed() >= Duration::from_secs(2), "taken over before the timeout:\n{log}");
    assert!(log.contains(&format!("process {}", a.id())), "the takeover names the old holder:\n{log}");
    a.kill().unwrap();
    a.wait().unwrap();
    write_until_shipped(&conn, &url, shipped, Duration::from_secs(30));
    write_for(&conn, 8, Duration::from_millis(300));
    let status = interrupt(b);
    assert!(status.success(), "the new holder exits cleanly:\n{}", read(&log_b));
    assert_restores_to(&conn, &url, &dir.path().join("out.db"), &format!("after the takeover\n{}", read(&log_b)));
}

/// The frozen holder's replica is taken over by another database's
/// process, which continues after its TXIDs with a snapshot; when the old
/// holder resumes, its renewal fails and it stops writing at once, naming
/// the new holder, and does not exit 0. The replica restores to the new
/// holder's database exactly.
#[test]
fn a_resumed_holder_that_lost_its_lease_stops_writing_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (db1, db2) = (dir.path().join("one.db"), dir.path().join("two.db"));
    let (conn1, conn2) = (create_db(&db1, 4096), create_db(&db2, 4096));
    let url = format!("file://{}", dir.path().join("replica").display());
    let (c1, c2) =
        (config(dir.path(), "one", &db1, &url, "2s", None), config(dir.path(), "two", &db2, &url, "2s", None));
    let (log1, log2) = (dir.path().join("one.log"), dir.path().join("two.log"));
    let a = start(&c1, &log1);
    let first = write_until_shipped(&conn1, &url, 0, Duration::from_secs(60));
    // Ahead of the second database's capture, which has only its first
    // snapshot: the second continues after these TXIDs.
    let held = write_until_shipped(&conn1, &url, first + 2, Duration::from_secs(30));
    signal(&a, libc::SIGSTOP);
    let b = start(&c2, &log2);
    wait_for_log(&log2, "took over the replica's lease", Duration::from_secs(30));
    let taken = write_until_shipped(&conn2, &url, held, Duration::from_secs(30));
    signal(&a, libc::SIGCONT);
    write_for(&conn1, 9, Duration::from_millis(500));
    let log = wait_for_log(&log1, "took over this replica's lease", Duration::from_secs(30));
    assert!(log.contains(&format!("process {} on host", b.id())), "the loser names the new holder:\n{log}");
    write_for(&conn1, 10, Duration::from_millis(500));
    let status = interrupt(a);
    assert!(!status.success(), "the old holder's changes are in no replica:\n{}", read(&log1));
    write_until_shipped(&conn2, &url, taken, Duration::from_secs(30));
    let status = interrupt(b);
    assert!(status.success(), "{}", read(&log2));
    assert_restores_to(&conn2, &url, &dir.path().join("out.db"), &format!("database two\n{}", read(&log2)));
}

/// kill -9, then the same database's next process on this machine: the
/// holder's pid is gone, so its lease is taken over at once rather than
/// after the (here long) timeout, and the replica continues.
#[test]
fn a_killed_holder_on_this_machine_is_taken_over_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, 4096);
    let url = format!("file://{}", dir.path().join("replica").display());
    let cfg = config(dir.path(), "app", &db, &url, "60s", None);
    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let mut a = start(&cfg, &log_a);
    write_until_shipped(&conn, &url, 0, Duration::from_secs(60));
    write_for(&conn, 6, Duration::from_millis(300));
    a.kill().unwrap();
    a.wait().unwrap();
    let shipped = replica_txid(&url);
    assert!(dir.path().join("replica/sluice-lease.json").exists(), "kill -9 leaves the lease behind");
    let restarted = Instant::now();
    let b = start(&cfg, &log_b);
    write_until_shipped(&conn, &url, shipped, Duration::from_secs(30));
    assert!(restarted.elapsed() < Duration::from_secs(30), "waited for the timeout:\n{}", read(&log_b));
    assert!(read(&log_b).contains("took over the replica's lease"), "{}", read(&log_b));
    let status = interrupt(b);
    assert!(status.success(), "{}", read(&log_b));
    assert_restores_to(&conn, &url, &dir.path().join("out.db"), &format!("after kill -9\n{}", read(&log_b)));
}

/// A clean exit releases the lease after its final shipping: the next
/// process (here another database's, on another host as far as it can
/// tell) ships at once, although the lease timeout is long; and `-once`
/// against a live holder fails at once, naming it.
#[test]
fn a_clean_exit_releases_the_lease_and_once_refuses_a_live_holder() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, 4096);
    let url = format!("file://{}", dir.path().join("replica").display());
    let cfg = config(dir.path(), "app", &db, &url, "60s", None);
    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let a = start(&cfg, &log_a);
    write_until_shipped(&conn, &url, 0, Duration::from_secs(60));

    // Another database (its own meta directory) pointed at this replica.
    let other = dir.path().join("other.db");
    create_db(&other, 4096);
    let started = Instant::now();
    let once = sluice().args(["replicate", "-once"]).arg(&other).arg(&url).output().unwrap();
    let stderr = String::from_utf8_lossy(&once.stderr);
    assert!(!once.status.success(), "-once must fail while another process holds the lease:\n{stderr}");
    assert!(stderr.contains(&format!("process {} on host", a.id())) && stderr.contains("-once"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30), "-once waited for the timeout:\n{stderr}");

    let status = interrupt(a);
    assert!(status.success(), "{}", read(&log_a));
    assert!(!dir.path().join("replica/sluice-lease.json").exists(), "a clean exit releases the lease");
    let shipped = replica_txid(&url);
    let restarted = Instant::now();
    let b = start(&cfg, &log_b);
    let txid = write_until_shipped(&conn, &url, shipped, Duration::from_secs(30));
    assert!(restarted.elapsed() < Duration::from_secs(30), "waited for the timeout:\n{}", read(&log_b));
    assert!(!read(&log_b).contains("holds this replica's lease"), "{}", read(&log_b));
    assert!(txid > shipped);
    let status = interrupt(b);
    assert!(status.success(), "{}", read(&log_b));
    assert_restores_to(&conn, &url, &dir.path().join("out.db"), &format!("after a release\n{}", read(&log_b)));
}

/// The lease's renewal count, from the lease object in a file replica.
fn renewals(replica: &Path) -> Option<u64> {
    let body = std::fs::read(replica.join("sluice-lease.json")).ok()?;
    serde_json::from_slice::<serde_json::Value>(&body).ok()?["renewal"].as_u64()
}

/// An idle replica's lease rests: once it has had nothing to write for
/// one lease timeout, one renewal promises sixty timeouts and the next
/// comes a quarter of that later, so the renewal count stands still; a
/// second database pointed at the replica by mistake still waits (the
/// quiet holder is alive); the next write renews with the short promise
/// and ships; the replica restores to the first database exactly, and a
/// clean exit releases the resting lease.
#[test]
fn an_idle_replicas_lease_rests_and_the_next_write_renews_it() {
    let dir = tempfile::tempdir().unwrap();
    let (db, other) = (dir.path().join("app.db"), dir.path().join("other.db"));
    let (conn, _other_conn) = (create_db(&db, 4096), create_db(&other, 4096));
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let cfg = config(dir.path(), "app", &db, &url, "2s", None);
    let (log, other_log) = (dir.path().join("app.log"), dir.path().join("other.log"));
    let a = start(&cfg, &log);
    let shipped = write_until_shipped(&conn, &url, 0, Duration::from_secs(60));
    // Renewed every half second while busy; resting after the timeout.
    std::thread::sleep(Duration::from_secs(4));
    let resting = renewals(&replica).expect("the lease is in the replica");
    let body: serde_json::Value =
        serde_json::from_slice(&std::fs::read(replica.join("sluice-lease.json")).unwrap()).unwrap();
    assert_eq!(body["ttl_ms"], 120_000, "a resting lease promises sixty timeouts: {body}");
    let b = start(&config(dir.path(), "other", &other, &url, "2s", None), &other_log);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(renewals(&replica), Some(resting), "a resting lease was renewed early:\n{}", read(&log));
    let text = read(&other_log);
    assert!(text.contains("holds this replica's lease") && !text.contains("took over"), "{text}");
    assert!(!interrupt(b).success(), "the second database replicated nothing, and says so");
    // A write wakes it: renewed, and shipped.
    write_until_shipped(&conn, &url, shipped, Duration::from_secs(30));
    assert!(renewals(&replica).is_some_and(|n| n > resting), "shipped without renewing:\n{}", read(&log));
    // Idle again, then a clean exit: the resting lease is released, and
    // the replica holds the first database exactly.
    std::thread::sleep(Duration::from_secs(5));
    let status = interrupt(a);
    assert!(status.success(), "{}", read(&log));
    assert!(renewals(&replica).is_none(), "a clean exit releases even a resting lease:\n{}", read(&log));
    assert_restores_to(&conn, &url, &dir.path().join("out.db"), &format!("after resting\n{}", read(&log)));
}

/// `lease-timeout: off` (decision 33): the replica is written without a
/// lease (no lease object, so no request to keep one while idle), and
/// restores exactly.
#[test]
fn with_the_lease_off_nothing_of_a_lease_is_written_and_the_replica_restores() {
    let dir = tempfile::tempdir().unwrap();
    let (db, replica) = (dir.path().join("a.db"), dir.path().join("replica"));
    let url = format!("file://{}", replica.display());
    let conn = create_db(&db, 4096);
    let log = dir.path().join("a.log");
    let child = start(&config(dir.path(), "a", &db, &url, "off", None), &log);
    let shipped = write_until_shipped(&conn, &url, 0, Duration::from_secs(30));
    write_until_shipped(&conn, &url, shipped, Duration::from_secs(30));
    assert!(!replica.join("sluice-lease.json").exists(), "a lease object was written with the lease off");
    assert!(interrupt(child).success(), "{}", read(&log));
    assert!(!replica.join("sluice-lease.json").exists(), "a lease object was written with the lease off");
    assert_restores_to(&conn, &url, &dir.path().join("check.db"), "the replica written without a lease");
}
