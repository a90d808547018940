//! SIGHUP reloads the config file while `sluice replicate` runs: a
//! database removed from the file stops after its final sync, one added
//! starts, one whose replicas changed restarts on its new ones, and the
//! others go on; a file that no longer reads changes nothing. Each change
//! is proved by restoring the replicas and comparing them page for page
//! with the databases this process wrote.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PAGE: u32 = 4096;

fn url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// `sync -wait` through the socket: every replica holds what the database holds now.
fn sync_wait(socket: &Path, db: &Path) {
    let out = run_ok(sluice().args(["sync", "-wait", "-json", "-socket"]).arg(socket).arg(db));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["txid"], v["replica_txid"], "{v}");
}

fn listed(socket: &Path) -> Vec<PathBuf> {
    let out = run_ok(sluice().args(["list", "-json", "-socket"]).arg(socket));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut paths: Vec<PathBuf> =
        v["databases"].as_array().unwrap().iter().map(|d| PathBuf::from(d["path"].as_str().unwrap())).collect();
    paths.sort();
    paths
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn entry(db: &Path, replicas: &[&Path]) -> String {
    let mut s = format!("  - path: {}\n    replicas:\n", db.display());
    for r in replicas {
        s.push_str(&format!("      - url: {}\n", url(r)));
    }
    s
}

#[test]
fn sighup_adds_removes_and_restarts_databases() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let (a, b, c) = (p("a.db"), p("b.db"), p("c.db"));
    let (conn_a, conn_b, conn_c) = (create_db(&a, PAGE), create_db(&b, PAGE), create_db(&c, PAGE));
    let mut rng = seeded(41);
    let body = format!("dbs:\n{}{}", entry(&a, &[&p("ra")]), entry(&b, &[&p("rb")]));
    let (child, socket) = start_with_socket(dir.path(), &body);
    workload(&conn_a, &mut rng, 30);
    workload(&conn_b, &mut rng, 30);
    sync_wait(&socket, &a);
    sync_wait(&socket, &b);
    workload(&conn_b, &mut rng, 20);
    let b_at_removal = image(&conn_b);

    // b goes, c comes, a gains a second replica.
    rewrite_config(dir.path(), &format!("dbs:\n{}{}", entry(&a, &[&p("ra"), &p("ra2")]), entry(&c, &[&p("rc")])));
    hangup(&child);
    wait_for("the reload", || listed(&socket) == vec![a.clone(), c.clone()]);
    let removed = restore_image(&url(&p("rb")), &p("check.db"), None, PAGE);
    assert_same_image(&b_at_removal, &removed, "b's replica after its final sync");

    workload(&conn_a, &mut rng, 30);
    workload(&conn_b, &mut rng, 30);
    workload(&conn_c, &mut rng, 30);
    sync_wait(&socket, &a);
    sync_wait(&socket, &c);
    for (replica, conn, what) in [("ra", &conn_a, "a"), ("ra2", &conn_a, "a's new replica"), ("rc", &conn_c, "c")] {
        let got = restore_image(&url(&p(replica)), &p("check.db"), None, PAGE);
        assert_same_image(&image(conn), &got, what);
    }
    // b is not replicated any more.
    let still = restore_image(&url(&p("rb")), &p("check.db"), None, PAGE);
    assert_same_image(&b_at_removal, &still, "b's replica after writes to the removed b");

    // A file that does not parse changes nothing.
    std::fs::write(dir.path().join("sluice.yml"), "dbs: [unclosed\n").unwrap();
    hangup(&child);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(listed(&socket), vec![a.clone(), c.clone()]);
    workload(&conn_a, &mut rng, 20);
    sync_wait(&socket, &a);
    let got = restore_image(&url(&p("ra2")), &p("check.db"), None, PAGE);
    assert_same_image(&image(&conn_a), &got, "a after a reload that failed");

    let log = stop(child);
    assert!(log.contains("1 added, 1 removed, 1 changed, 0 unchanged"), "{log}");
    assert!(log.contains("not reloaded, the run goes on unchanged"), "{log}");
}

/// Without a control socket (nothing else keeps the run alive), changing
/// the only database's replicas restarts it on them instead of ending the
/// run when its old loop stops.
#[test]
fn sighup_restarts_the_only_database_without_ending_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let a = p("a.db");
    let conn = create_db(&a, PAGE);
    let mut rng = seeded(42);
    let config = p("plain.yml");
    std::fs::write(&config, format!("dbs:\n{}", entry(&a, &[&p("ra")]))).unwrap();
    let mut child = start_replicator(&config);
    workload(&conn, &mut rng, 20);
    wait_for("the first replica", || replica_txid(&url(&p("ra"))) > 0);
    std::fs::write(&config, format!("dbs:\n{}", entry(&a, &[&p("ra"), &p("ra2")]))).unwrap();
    hangup(&child);
    wait_for("the new replica", || std::fs::read_dir(p("ra2")).is_ok_and(|mut d| d.next().is_some()));
    workload(&conn, &mut rng, 20);
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "the run ended when its only database restarted");
    stop(child);
    for replica in ["ra", "ra2"] {
        let got = restore_image(&url(&p(replica)), &p("check.db"), None, PAGE);
        assert_same_image(&image(&conn), &got, replica);
    }
}

/// Bytes of segments under a file replica (what a storage quota counts).
fn segment_bytes(dir: &Path) -> u64 {
    walk(dir).iter().filter(|p| p.extension().is_some_and(|e| e == "seg")).map(|p| p.metadata().unwrap().len()).sum()
}

/// The database's TXID as captured by a `sync` (no wait), and the newest
/// the replica holds.
fn positions(socket: &Path, db: &Path, replica: &Path) -> (u64, u64) {
    let out = run_ok(sluice().args(["sync", "-json", "-socket"]).arg(socket).arg(db));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let txid = v["txid"].as_u64().unwrap_or_else(|| panic!("no txid in {v}"));
    (txid, replica_txid(&url(replica)))
}

/// A tenant's storage quota: uploads stop short of it (the replica never
/// holds more), the operator is told what to raise, and raising it with a
/// reload ships everything captured meanwhile, restoring exactly.
#[test]
fn a_storage_quota_stops_uploads_and_raising_it_resumes_them() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let (a, ra) = (p("a.db"), p("ra"));
    let conn = create_db(&a, PAGE);
    conn.execute_batch("CREATE TABLE blobs(b BLOB)").unwrap();
    let limited = |mib: u32| format!("{}        sandbox: {{ storage-quota-mib: {mib} }}\n", entry(&a, &[&ra]));
    let (child, socket) = start_with_socket(dir.path(), &format!("dbs:\n{}", limited(1)));
    sync_wait(&socket, &a);
    // 3 MiB of incompressible rows, 256 KiB a transaction, each captured
    // on its own: a quarter of them fit in 1 MiB.
    for _ in 0..12 {
        conn.execute("INSERT INTO blobs VALUES (randomblob(262144))", []).unwrap();
        positions(&socket, &a, &ra);
    }
    let mut last = (0, 0);
    let mut steady_since = Instant::now();
    wait_for("the replica to stop at its quota", || {
        let now = positions(&socket, &a, &ra);
        if now != last {
            (last, steady_since) = (now, Instant::now());
        }
        steady_since.elapsed() > Duration::from_secs(3)
    });
    let (txid, replica_txid) = last;
    assert!(replica_txid < txid, "the replica took everything despite its quota: {last:?}");
    let held = segment_bytes(&ra);
    assert!(held <= 1 << 20, "the replica holds {held} bytes, past its 1 MiB quota");
    assert!(held > 1 << 19, "the replica stopped at {held} bytes, well short of its quota");

    rewrite_config(dir.path(), &format!("dbs:\n{}", limited(64)));
    hangup(&child);
    // The database restarts on the raised quota (its old loop's final
    // sync fails at the old one, said as such), then ships the rest. A
    // wait asked of the old loop would never end: each is cut short.
    wait_for("the database to restart and catch up", || {
        let mut cmd = sluice();
        cmd.args(["sync", "-wait", "-timeout", "2", "-socket"]).arg(&socket).arg(&a);
        cmd.output().unwrap().status.success()
    });
    let got = restore_image(&url(&ra), &p("check.db"), None, PAGE);
    assert_same_image(&image(&conn), &got, "the replica after its quota was raised");
    let log = stop(child);
    let told = log.matches("raise `storage-quota-mib`").count();
    assert!((1..=2).contains(&told), "the quota was reported {told} times:\n{log}");
}
