//! Many tenants in one `sluice replicate`, some of them hostile: tenants
//! whose plugin loops, exhausts its memory, panics or floods stderr are
//! added by a reload while the others are replicated, and the others'
//! commit-to-replica lag is measured before and during, side by side in
//! one run (printed: how much they slow the others is a figure, not a
//! pass/fail). Every well-behaved tenant must keep replicating (each write
//! reaches its replica within `LAG_LIMIT`), and restore exactly at the end.
//!
//! `SLUICE_TENANTS=N` runs N well-behaved tenants (default 60).

mod common;

#[path = "common/hostile.rs"]
mod hostile;

use common::*;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PAGE: u32 = 4096;
/// Writes whose lag is measured in each phase.
const LAG_WRITES: usize = 40;
/// A write that does not reach its replica within this has not been
/// merely slowed: the tenant stopped replicating.
const LAG_LIMIT: Duration = Duration::from_secs(20);

/// The hostile tenants: what each plugin does at every put, and its
/// sandbox. Each violates a different limit, on every write.
const HOSTILE: &[(&str, &str)] = &[
    ("loop", "mode: spin\n        ms: forever\n        sandbox: { cpu-ms: 2000 }\n"),
    ("memory", "mode: memory\n        mib: 512\n        sandbox: { memory-mib: 32 }\n"),
    ("panic", "mode: panic\n        message: tenant panics\n"),
    ("chatter", "mode: noop\n        stderr-kib: 64\n"),
    ("slow", "mode: noop\n        delay-ms: 1500\n"),
];

fn tenants() -> usize {
    std::env::var("SLUICE_TENANTS").ok().and_then(|n| n.parse().ok()).unwrap_or(60)
}

fn url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

struct Tenant {
    db: PathBuf,
    replica: PathBuf,
    conn: Connection,
}

fn level0_segments(replica: &Path) -> usize {
    std::fs::read_dir(replica.join("0000")).map_or(0, |d| d.count())
}

/// Commit one row to `t`; how long until its replica holds one more
/// level-0 segment (`None` past `LAG_LIMIT`).
fn lag(t: &Tenant) -> Option<Duration> {
    let before = level0_segments(&t.replica);
    t.conn.execute("INSERT INTO t(b) VALUES (randomblob(100))", []).unwrap();
    let committed = Instant::now();
    while level0_segments(&t.replica) == before {
        if committed.elapsed() > LAG_LIMIT {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Some(committed.elapsed())
}

/// Lags of `LAG_WRITES` writes to tenants picked in turn by a seeded
/// walk; `poke` runs before each (writes to the hostile tenants).
fn lags(good: &[Tenant], seed: u64, mut poke: impl FnMut()) -> Vec<Duration> {
    use rand::RngExt;
    let mut rng = seeded(seed);
    let mut got = Vec::new();
    for _ in 0..LAG_WRITES {
        poke();
        let t = &good[rng.random_range(0..good.len())];
        let l = lag(t).unwrap_or_else(|| panic!("a write to {} did not reach its replica", t.db.display()));
        got.push(l);
    }
    got.sort();
    got
}

/// p50 / max of sorted lags.
fn summary(sorted: &[Duration]) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!("{:.0} / {:.0} ms", ms(sorted[sorted.len() / 2]), ms(sorted[sorted.len() - 1]))
}

fn good_entry(t: &Tenant) -> String {
    format!("  - path: {}\n    replicas:\n      - url: {}\n", t.db.display(), url(&t.replica))
}

fn hostile_entry(db: &Path, replica: &Path, settings: &str) -> String {
    format!(
        "  - path: {}\n    replicas:\n      - url: {}\n        plugin: {}\n        {settings}",
        db.display(),
        url(replica),
        hostile::hostile_wasm().display()
    )
}

fn listed(socket: &Path) -> usize {
    let out = run_ok(sluice().args(["list", "-json", "-socket"]).arg(socket));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["databases"].as_array().unwrap().len()
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `start_with_socket` with the log going to a file: a pipe the test
/// reads only at the end would fill with this many tenants' debug lines
/// and stall the replicator on its next log line.
fn start(dir: &Path, body: &str) -> (std::process::Child, PathBuf, PathBuf) {
    rewrite_config(dir, body);
    let (socket, log_path) = (dir.join("ctl.sock"), dir.join("sluice.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let child = sluice()
        .args(["replicate", "-config"])
        .arg(dir.join("sluice.yml"))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start sluice replicate");
    wait_for("the control socket", Duration::from_secs(60), || {
        sluice().args(["info", "-socket"]).arg(&socket).output().unwrap().status.success()
    });
    (child, socket, log_path)
}

/// Interrupt the replicator; it must exit 0. Returns its log.
fn stop(mut child: std::process::Child, log_path: &Path) -> String {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(status.success(), "sluice exited with {status}:\n{}", tail(&log));
    log
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.contains("DEBUG")).collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[test]
fn hostile_tenants_do_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: String| dir.path().join(n);
    let good: Vec<Tenant> = (0..tenants())
        .map(|i| {
            let db = p(format!("t{i}.db"));
            let conn = create_db(&db, PAGE);
            Tenant { db, replica: p(format!("r{i}")), conn }
        })
        .collect();
    let hostile: Vec<(PathBuf, PathBuf, &str)> = HOSTILE
        .iter()
        .map(|(name, settings)| {
            let db = p(format!("hostile-{name}.db"));
            create_db(&db, PAGE);
            (db, p(format!("hostile-{name}")), *settings)
        })
        .collect();
    hostile::hostile_wasm();
    let body: String = good.iter().map(good_entry).collect();
    let (child, socket, log_path) = start(dir.path(), &format!("dbs:\n{body}"));
    wait_for("every first snapshot", Duration::from_secs(120), || {
        good.iter().all(|t| walk(&t.replica).iter().any(|f| f.extension().is_some_and(|e| e == "seg")))
    });

    // Side by side in one run: the same writes alone, then beside the
    // hostile tenants (added by a reload, written at every step).
    let alone = lags(&good, 7, || ());
    let with_hostile: String = hostile.iter().map(|(db, r, s)| hostile_entry(db, r, s)).collect();
    rewrite_config(dir.path(), &format!("dbs:\n{body}{with_hostile}"));
    hangup(&child);
    wait_for("the hostile tenants to be added", Duration::from_secs(30), || {
        listed(&socket) == good.len() + hostile.len()
    });
    let conns: Vec<Connection> = hostile.iter().map(|(db, _, _)| Connection::open(db).unwrap()).collect();
    let poke = || {
        for c in &conns {
            c.execute("INSERT INTO t(b) VALUES (randomblob(100))", []).unwrap();
        }
    };
    std::thread::sleep(Duration::from_secs(2));
    let beside = lags(&good, 7, poke);
    eprintln!(
        "{} tenants, lag p50 / max: alone {}, beside {} hostile tenants {}",
        good.len(),
        summary(&alone),
        hostile.len(),
        summary(&beside)
    );

    // The hostile tenants leave (their final syncs fail, said so); the
    // run goes on and ends cleanly.
    rewrite_config(dir.path(), &format!("dbs:\n{body}"));
    hangup(&child);
    // Their final syncs run together, each for up to the default
    // shutdown-sync-timeout (30 s); one still running then is forgotten
    // once it ends.
    let removed = Instant::now();
    while listed(&socket) != good.len() {
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert!(removed.elapsed() < Duration::from_secs(60), "the hostile tenants were not removed:\n{}", tail(&log));
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = stop(child, &log_path);
    // Each on one line (a plugin's panic text is folded into it).
    for (name, why) in [("loop", "CPU budget"), ("memory", "memory limit"), ("panic", "tenant panics")] {
        let db = p(format!("hostile-{name}.db")).display().to_string();
        assert!(
            log.lines().any(|l| l.contains(&db) && l.contains(why)),
            "the log does not say that {db} failed for its {why}:\n{}",
            log.lines().filter(|l| l.contains("hostile")).take(20).collect::<Vec<_>>().join("\n")
        );
    }
    for t in &good {
        let got = restore_image(&url(&t.replica), &p("check.db".into()), None, PAGE);
        assert_same_image(&image(&t.conn), &got, &t.db.display().to_string());
    }
}
