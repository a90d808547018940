//! The control socket and watched directories: databases added, stopped,
//! started and removed while `sluice replicate` runs, each change proved
//! by restoring the replica and comparing it page for page with the
//! database this process wrote; and Litestream 0.5.17's own CLI driving
//! sluice's socket (its requests and its reading of the answers are the
//! compatibility that matters to a migrating user's scripts).

mod common;

use common::litestream_bin::litestream;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const PAGE: u32 = 4096;

/// `sluice CMD -socket S -json ARGS...`: its JSON answer.
fn ctl(socket: &Path, cmd: &str, args: &[&str]) -> Value {
    let out = run_ok(sluice().arg(cmd).arg("-socket").arg(socket).arg("-json").args(args));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{cmd}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// `sync -wait`: every replica holds what the database holds now.
fn sync_wait(socket: &Path, db: &Path) -> u64 {
    let v = ctl(socket, "sync", &["-wait", db.to_str().unwrap()]);
    assert_eq!(v["txid"], v["replica_txid"], "sync -wait returned before the replica had it: {v}");
    v["txid"].as_u64().unwrap()
}

fn statuses(socket: &Path) -> Vec<(String, String)> {
    let v = ctl(socket, "list", &[]);
    v["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["path"].as_str().unwrap().to_string(), d["status"].as_str().unwrap().to_string()))
        .collect()
}

fn url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// A replica restores to exactly the database's current content.
fn assert_restores(replica: &Path, db: &rusqlite::Connection, scratch: &Path, what: &str) {
    let want = image(db);
    let got = restore_image(&url(replica), scratch, None, PAGE);
    assert_same_image(&want, &got, what);
}

#[test]
fn register_stop_start_unregister_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let (ra, rb) = (dir.path().join("ra"), dir.path().join("rb"));
    let conn_a = create_db(&a, PAGE);
    let conn_b = create_db(&b, PAGE);
    let mut rng = seeded(11);
    let body = format!("dbs:\n  - path: {}\n    replica:\n      url: {}\n", a.display(), url(&ra));
    let (child, socket) = start_with_socket(dir.path(), &body);
    let info = ctl(&socket, "info", &[]);
    assert_eq!((info["database_count"].as_u64(), info["pid"].as_u64()), (Some(1), Some(child.id() as u64)), "{info}");
    for field in ["version", "uptime_seconds", "started_at"] {
        assert!(!info[field].is_null(), "info lacks {field}: {info}");
    }

    // Registered while running: replicated without a restart. Four at
    // once: exactly one registers it (two captures of one database would
    // corrupt its local state), the others find it registered.
    workload(&conn_b, &mut rng, 40);
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let (socket, rb, b) = (socket.clone(), url(&rb), b.to_str().unwrap().to_string());
            std::thread::spawn(move || ctl(&socket, "register", &["-replica", &rb, &b]))
        })
        .collect();
    let mut answers: Vec<String> =
        racers.into_iter().map(|r| r.join().unwrap()["status"].as_str().unwrap().to_string()).collect();
    answers.sort();
    assert_eq!(answers, ["already_registered", "already_registered", "already_registered", "registered"]);
    workload(&conn_b, &mut rng, 40);
    sync_wait(&socket, &b);
    assert_restores(&rb, &conn_b, &dir.path().join("r1.db"), "b after register");
    workload(&conn_a, &mut rng, 30);
    sync_wait(&socket, &a);
    assert_restores(&ra, &conn_a, &dir.path().join("r2.db"), "a, beside b");

    // Stopped: its final sync is in the replica, later writes are not,
    // until it starts again and catches up with them.
    workload(&conn_b, &mut rng, 20);
    let stopped = ctl(&socket, "stop", &[b.to_str().unwrap()]);
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    assert_restores(&rb, &conn_b, &dir.path().join("r3.db"), "b's final sync at stop");
    let held = replica_txid(&url(&rb));
    assert!(statuses(&socket).contains(&(b.display().to_string(), "stopped".into())));
    workload(&conn_b, &mut rng, 30);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(replica_txid(&url(&rb)), held, "a stopped database was replicated");
    assert_eq!(ctl(&socket, "stop", &[b.to_str().unwrap()])["status"], "already_stopped");
    assert_eq!(ctl(&socket, "start", &[b.to_str().unwrap()])["status"], "started");
    assert_eq!(ctl(&socket, "start", &[b.to_str().unwrap()])["status"], "already_running");
    workload(&conn_b, &mut rng, 10);
    let txid = sync_wait(&socket, &b);
    assert!(txid > held, "nothing captured after start ({txid} <= {held})");
    assert_restores(&rb, &conn_b, &dir.path().join("r4.db"), "b after stop and start");

    // Unregistered: gone from the list, and no longer replicated.
    let gone = ctl(&socket, "unregister", &[b.to_str().unwrap()]);
    assert_eq!(gone["status"], "unregistered", "{gone}");
    assert_eq!(ctl(&socket, "unregister", &[b.to_str().unwrap()])["status"], "already_unregistered");
    assert_eq!(statuses(&socket), vec![(a.display().to_string(), "replicating".to_string())]);
    let held = replica_txid(&url(&rb));
    workload(&conn_b, &mut rng, 20);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(replica_txid(&url(&rb)), held, "an unregistered database was replicated");

    // Mistakes get one clear error and a failing exit code.
    let missing = sluice().arg("sync").arg("-socket").arg(&socket).arg(dir.path().join("nope.db")).output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("database not found"), "{missing:?}");
    let bad = sluice()
        .arg("register")
        .arg("-socket")
        .arg(&socket)
        .args(["-replica", "nosuch://x/y"])
        .arg(dir.path().join("c.db"))
        .output()
        .unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("register failed"), "{bad:?}");
    let no_daemon = sluice().args(["list", "-socket"]).arg(dir.path().join("none.sock")).output().unwrap();
    assert!(!no_daemon.status.success());
    assert!(String::from_utf8_lossy(&no_daemon.stderr).contains("failed to connect to control socket"));

    workload(&conn_a, &mut rng, 10);
    let log = stop(child);
    assert_restores(&ra, &conn_a, &dir.path().join("r5.db"), "a after shutdown (its final sync)");
    // b's capture started twice: at register and at start, never beside itself.
    let starts = format!("replicating database={} replicas", b.display());
    assert_eq!(log.lines().filter(|l| l.contains(&starts)).count(), 2, "{log}");
    drop((conn_a, conn_b));
    assert!(!socket.exists(), "the socket file is removed at exit");
}

#[test]
fn watched_directory_picks_up_new_and_removed_databases() {
    let dir = tempfile::tempdir().unwrap();
    let tenants = dir.path().join("tenants");
    std::fs::create_dir_all(tenants.join("nested")).unwrap();
    let replicas = dir.path().join("replicas");
    let t1 = tenants.join("t1.db");
    let conn1 = create_db(&t1, PAGE);
    let mut rng = seeded(12);
    workload(&conn1, &mut rng, 20);
    let body = format!(
        "dbs:\n  - dir: {}\n    pattern: \"*.db\"\n    recursive: true\n    watch: true\n    replica:\n      url: {}\n",
        tenants.display(),
        url(&replicas)
    );
    let (child, socket) = start_with_socket(dir.path(), &body);
    assert_eq!(statuses(&socket).len(), 1);

    // Created while running, below the directory: picked up and replicated
    // under its own path; a file that is not (yet) SQLite is skipped.
    std::fs::write(tenants.join("notes.db"), b"").unwrap();
    let t2 = tenants.join("nested/t2.db");
    let conn2 = create_db(&t2, PAGE);
    workload(&conn2, &mut rng, 40);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !statuses(&socket).iter().any(|(p, s)| Path::new(p) == t2 && s == "replicating") {
        assert!(Instant::now() < deadline, "the new database was not picked up: {:?}", statuses(&socket));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!statuses(&socket).iter().any(|(p, _)| p.ends_with("notes.db")), "a non-SQLite file was registered");
    workload(&conn2, &mut rng, 20);
    sync_wait(&socket, &t2);
    assert_restores(&replicas.join("nested/t2.db"), &conn2, &dir.path().join("r1.db"), "t2, new in the directory");

    // Removed: replication of it stops; the others go on.
    drop(conn2);
    for f in ["t2.db", "t2.db-wal", "t2.db-shm"] {
        let _ = std::fs::remove_file(tenants.join("nested").join(f));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while statuses(&socket).iter().any(|(p, _)| Path::new(p) == t2) {
        assert!(Instant::now() < deadline, "the removed database is still registered");
        std::thread::sleep(Duration::from_millis(100));
    }
    workload(&conn1, &mut rng, 20);
    sync_wait(&socket, &t1);
    assert_restores(&replicas.join("t1.db"), &conn1, &dir.path().join("r2.db"), "t1, beside the removal");
    drop(conn1);
    stop(child);
}

/// Litestream 0.5.17's CLI, pointed at sluice's socket: every command
/// succeeds and reads sluice's answers.
#[test]
fn litestream_cli_drives_sluice() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let (ra, rb) = (dir.path().join("ra"), dir.path().join("rb"));
    let conn_a = create_db(&a, PAGE);
    let conn_b = create_db(&b, PAGE);
    let mut rng = seeded(13);
    let body = format!("dbs:\n  - path: {}\n    replica:\n      url: {}\n", a.display(), url(&ra));
    let (child, socket) = start_with_socket(dir.path(), &body);
    let ls = |args: &[&str]| -> String {
        let mut cmd = Command::new(litestream("0.5.17"));
        cmd.env_remove("AWS_CA_BUNDLE");
        // Go's flag package stops at the first positional: flags first.
        let (sub, rest) = args.split_first().unwrap();
        let out = cmd.arg(sub).arg("-socket").arg(&socket).args(rest).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "litestream {args:?} against sluice: {text}");
        text
    };
    let info: Value = serde_json::from_str(&ls(&["info", "-json"])).unwrap();
    assert_eq!(info["database_count"], 1, "{info}");
    assert!(ls(&["info"]).contains("PID:"));
    assert!(ls(&["register", "-replica", &url(&rb), b.to_str().unwrap()]).contains("status: registered"));
    workload(&conn_b, &mut rng, 30);
    let synced: Value = serde_json::from_str(&ls(&["sync", "-wait", "-json", b.to_str().unwrap()])).unwrap();
    assert_eq!(synced["txid"], synced["replica_txid"], "{synced}");
    assert_restores(&rb, &conn_b, &dir.path().join("r1.db"), "b, registered by Litestream's CLI");
    let listed: Value = serde_json::from_str(&ls(&["list", "-json"])).unwrap();
    assert_eq!(listed["databases"].as_array().unwrap().len(), 2, "{listed}");
    assert!(ls(&["list"]).contains("[replicating]"));
    assert!(ls(&["stop", b.to_str().unwrap()]).contains("status: stopped"));
    assert!(ls(&["start", b.to_str().unwrap()]).contains("status: started"));
    workload(&conn_a, &mut rng, 10);
    assert!(ls(&["sync", "-wait", a.to_str().unwrap()]).contains("replica_txid:"));
    assert_restores(&ra, &conn_a, &dir.path().join("r2.db"), "a, synced by Litestream's CLI");
    assert!(ls(&["unregister", b.to_str().unwrap()]).contains("status: unregistered"));
    drop((conn_a, conn_b));
    stop(child);
}

/// `/metrics` from `port`.
fn metrics_page(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port open");
    write!(s, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of `name{db="DB",...}` on a metrics page.
fn sample(page: &str, name: &str, db: &Path) -> Option<u64> {
    let prefix = format!("{name}{{db=\"{}\"", db.display());
    let line = page.lines().find(|l| l.starts_with(&prefix))?;
    line.rsplit(' ').next()?.parse::<f64>().ok().map(|v| v as u64)
}

/// Metrics follow the tenants: an idle database's replica TXID catches up
/// once its replica ships (after its sync interval), with no commit after
/// it; and a database unregistered while running leaves the page.
#[test]
fn metrics_catch_up_while_idle_and_forget_unregistered_databases() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let (conn_a, conn_b) = (create_db(&a, PAGE), create_db(&b, PAGE));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let body = format!(
        "addr: 127.0.0.1:{port}\ndbs:\n  - path: {}\n    replica:\n      url: {}\n      sync-interval: 5s\n",
        a.display(),
        url(&dir.path().join("ra"))
    );
    let (child, socket) = start_with_socket(dir.path(), &body);
    let mut rng = seeded(12);
    sync_wait(&socket, &a);
    workload(&conn_a, &mut rng, 20);
    // No commit from here on: the replica ships within its interval, and
    // the page says so.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = metrics_page(port);
        let (txid, replica) = (sample(&page, "sluice_txid", &a), sample(&page, "sluice_replica_txid", &a));
        if txid.is_some() && txid == replica && replica_txid(&url(&dir.path().join("ra"))) == txid.unwrap() {
            break;
        }
        assert!(Instant::now() < deadline, "sluice_replica_txid {replica:?} never reached sluice_txid {txid:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    let rb = url(&dir.path().join("rb"));
    ctl(&socket, "register", &["-replica", &rb, b.to_str().unwrap()]);
    workload(&conn_b, &mut rng, 20);
    sync_wait(&socket, &b);
    assert!(sample(&metrics_page(port), "sluice_txid", &b).is_some(), "b is not on the page");
    ctl(&socket, "unregister", &[b.to_str().unwrap()]);
    let page = metrics_page(port);
    assert!(!page.contains(&format!("\"{}\"", b.display())), "b stayed on the page:\n{page}");
    assert!(sample(&page, "sluice_txid", &a).is_some(), "a left the page");
    stop(child);
    drop((conn_a, conn_b));
}
