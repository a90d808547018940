//! The capture torture suite: the real `sluice replicate` against writers
//! in other processes, started, stopped with SIGTERM and killed with
//! SIGKILL at random points, while the application checkpoints in every
//! mode, vacuums, shrinks the file and changes its schema. For every
//! scenario, every TXID the replica lists is restored and must pass
//! `PRAGMA integrity_check` and hold exactly what the writers had committed
//! at that point (replayed, see `torture/writer.rs`); the latest restore
//! must equal the live database page for page; the replicator must never
//! die of a signal, and the application never see an error.
//!
//! `cargo test --test torture` runs the short suite (CI). Long mode:
//! `SLUICE_TORTURE_MINUTES=N` runs random scenarios for N minutes;
//! `SLUICE_TORTURE_SEED=S` runs the one scenario of seed S. Every scenario
//! prints its seed first.

mod common;
#[path = "torture/scenario.rs"]
mod scenario;
#[path = "torture/writer.rs"]
mod writer;

use common::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rusqlite::Connection;
use scenario::{Scenario, Start};
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use writer::{Model, WRITER_ENV, WriterSpec};

/// How long a replicator may take to exit after SIGTERM (final sync and
/// shipping included).
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// Not a test: the entry point of a writer process (the test binary runs
/// itself with `WRITER_ENV` set).
#[test]
fn torture_writer_process() {
    let Ok(spec) = std::env::var(WRITER_ENV) else { return };
    let spec: WriterSpec = serde_json::from_str(&spec).expect("writer spec");
    match writer::run(&spec) {
        Ok(_) => std::process::exit(0),
        Err(e) => {
            eprintln!("writer {} failed: {e}", spec.id);
            std::process::exit(3);
        }
    }
}

#[test]
fn torture_short_suite() {
    if std::env::var("SLUICE_TORTURE_MINUTES").is_ok() || std::env::var("SLUICE_TORTURE_SEED").is_ok() {
        return torture_long_mode();
    }
    let mut txids = 0;
    for s in Scenario::short_suite() {
        txids += run_scenario(&s);
    }
    eprintln!("torture: {} scenarios, {txids} TXIDs restored and checked", Scenario::short_suite().len());
}

fn torture_long_mode() {
    if let Ok(seed) = std::env::var("SLUICE_TORTURE_SEED") {
        let seed = parse_seed(&seed);
        let short = Scenario::short_suite().into_iter().find(|s| s.seed == seed);
        run_scenario(&short.unwrap_or_else(|| Scenario::random(seed)));
        return;
    }
    let minutes: f64 =
        std::env::var("SLUICE_TORTURE_MINUTES").unwrap().parse().expect("SLUICE_TORTURE_MINUTES: a number");
    let until = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let mut seeds = StdRng::seed_from_u64(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
    );
    let (mut scenarios, mut txids) = (0, 0);
    while Instant::now() < until {
        txids += run_scenario(&Scenario::random(seeds.random()));
        scenarios += 1;
        eprintln!("torture: {scenarios} scenarios, {txids} TXIDs so far");
    }
    eprintln!("torture long mode: {scenarios} scenarios, {txids} TXIDs restored and checked");
}

fn parse_seed(s: &str) -> u64 {
    let s = s.trim();
    s.strip_prefix("0x")
        .map_or_else(|| s.parse(), |h| u64::from_str_radix(h, 16))
        .expect("SLUICE_TORTURE_SEED: a number")
}

/// Run one scenario; returns how many TXIDs were restored and checked.
fn run_scenario(s: &Scenario) -> usize {
    // Kept on failure (removed at the end of a passing scenario): its logs
    // and replica are what explains the failure.
    let dir = tempfile::Builder::new().prefix("sluice-torture-").tempdir().unwrap();
    let dir = KeptOnPanic(Some(dir));
    eprintln!(
        "torture scenario seed {:#x} (rerun: SLUICE_TORTURE_SEED={:#x}) in {}: {s:?}",
        s.seed,
        s.seed,
        dir.path().display()
    );
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    let holder = setup(s, &db);
    let config = dir.path().join("sluice.yml");
    std::fs::write(&config, s.config(&db, &url)).unwrap();
    let mut run = Run {
        s,
        dir: dir.path().to_path_buf(),
        db: db.clone(),
        config,
        rng: StdRng::seed_from_u64(s.seed ^ 0x7157),
        lives: 0,
        replicator: None,
        writers: Vec::new(),
    };
    run.drive();
    // The application's connection goes last, as an application closes.
    drop(holder);
    // Validation ran against the live database all along; it must never
    // have found the capture wrong (its healing snapshot would hide that
    // from the restores below).
    let mut rests = 0;
    for life in 1..=run.lives {
        let log = std::fs::read_to_string(dir.path().join(format!("sluice-{life}.log"))).unwrap_or_default();
        rests += log.matches("files are closed until its next write").count();
        assert!(
            !log.contains("validation failed"),
            "seed {:#x}: life {life}: {}",
            s.seed,
            log.lines().filter(|l| l.contains("validation")).collect::<Vec<_>>().join("\n")
        );
    }
    // Databases past 64 MiB never rest (REST_MAX_BYTES), and two writers'
    // lulls seldom meet.
    if s.lulls && s.bulk_mb == 0 && s.writers == 1 {
        assert!(rests > 0, "seed {:#x}: the writers fell quiet, but the database never rested", s.seed);
    }
    let checked = verify(s, &db, &url, &dir.path().join("restored.db"));
    eprintln!("torture seed {:#x}: {} replicator lives, {rests} rests, {checked} TXIDs checked", s.seed, run.lives);
    checked
}

/// A scenario's directory: deleted when the scenario passes, kept (and
/// named) when it panics.
struct KeptOnPanic(Option<tempfile::TempDir>);

impl KeptOnPanic {
    fn path(&self) -> &Path {
        self.0.as_ref().expect("the directory lives until dropped").path()
    }
}

impl Drop for KeptOnPanic {
    fn drop(&mut self) {
        if let (true, Some(dir)) = (std::thread::panicking(), self.0.take()) {
            eprintln!("torture: the failed scenario's files are kept in {}", dir.keep().display());
        }
    }
}

/// Create the database as the scenario starts from; with `wal_at_start`,
/// the returned connection keeps a WAL with frames in it.
fn setup(s: &Scenario, db: &Path) -> Option<Connection> {
    let conn = Connection::open(db).unwrap();
    conn.pragma_update(None, "page_size", s.page_size).unwrap();
    if s.auto_vacuum {
        conn.pragma_update(None, "auto_vacuum", "full").unwrap();
    }
    conn.pragma_update(None, "journal_mode", "wal").unwrap();
    writer::create_progress(&conn).unwrap();
    for id in 0..s.writers {
        writer::create_schema(&conn, id).unwrap();
    }
    if s.bulk_mb > 0 {
        // Text compresses like real rows do; 4,000 bytes a row.
        let rows = s.bulk_mb as i64 * 1_000_000 / 4_000;
        conn.execute_batch("CREATE TABLE bulk(id INTEGER PRIMARY KEY, v TEXT)").unwrap();
        conn.execute(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?1) INSERT INTO bulk(v) SELECT hex(randomblob(1000)) || hex(zeroblob(1000)) FROM c",
            [rows],
        )
        .unwrap();
    }
    if !s.wal_at_start {
        // The last connection checkpoints and deletes the WAL.
        drop(conn);
        assert!(!db.with_file_name("app.db-wal").exists(), "closing left a WAL");
        return None;
    }
    conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    conn.execute_batch(
        "PRAGMA wal_checkpoint(TRUNCATE); CREATE TABLE held(x); INSERT INTO held VALUES (randomblob(3000));",
    )
    .unwrap();
    Some(conn)
}

/// The processes of a scenario while it runs.
struct Run<'a> {
    s: &'a Scenario,
    dir: PathBuf,
    db: PathBuf,
    config: PathBuf,
    rng: StdRng,
    lives: u32,
    replicator: Option<Child>,
    writers: Vec<(u32, Child)>,
}

impl Run<'_> {
    fn drive(&mut self) {
        let write_until = Instant::now() + Duration::from_millis(self.s.write_millis);
        match self.s.start {
            Start::ReplicatorFirst => {
                self.start_replicator();
                std::thread::sleep(Duration::from_millis(self.rng.random_range(20..400)));
                self.start_writers(write_until);
            }
            Start::Together => {
                self.start_replicator();
                self.start_writers(write_until);
            }
            Start::WritesFirst => {
                self.start_writers(write_until);
                std::thread::sleep(Duration::from_millis(self.rng.random_range(100..600)));
                self.start_replicator();
            }
        }
        while self.writers_running() {
            // The first life of a large database is cut short, to land in
            // its first snapshot.
            let life = match (self.s.bulk_mb > 0, self.lives) {
                (true, 1) => self.rng.random_range(50..1_500),
                // Later lives long enough for the snapshot to finish.
                (true, _) => self.rng.random_range(1_500..4_000),
                _ => self.rng.random_range(150..1_500),
            };
            std::thread::sleep(Duration::from_millis(life));
            if !self.writers_running() {
                break;
            }
            if !self.s.restarts {
                continue;
            }
            let kill = self.s.kill_replicator && self.rng.random_bool(0.5);
            self.stop_replicator(kill);
            // Writes go on for a moment with nobody replicating.
            std::thread::sleep(Duration::from_millis(self.rng.random_range(0..300)));
            self.start_replicator();
            if self.s.kill_writers && self.rng.random_bool(0.3) {
                self.kill_and_restart_a_writer(write_until);
            }
        }
        self.wait_writers();
        // Let the last life ship the tail, then stop it as an operator would.
        std::thread::sleep(Duration::from_millis(self.s.sync_ms + 300));
        self.stop_replicator(false);
    }

    fn start_replicator(&mut self) {
        self.lives += 1;
        let log = std::fs::File::create(self.dir.join(format!("sluice-{}.log", self.lives))).unwrap();
        let child = sluice()
            .args(["replicate", "-config"])
            .arg(&self.config)
            // Resting is said at debug: counted below.
            .env("SLUICE_LOG", "info,sluice::capture::rest=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sluice");
        self.replicator = Some(child);
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join(format!("sluice-{}.log", self.lives))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGKILL, or SIGTERM and a clean exit. Either way the replicator
    /// must still be running when the signal comes.
    fn stop_replicator(&mut self, kill: bool) {
        let mut child = self.replicator.take().expect("a replicator runs");
        // A signal that lands while the program is still being loaded kills
        // any program (none can handle it yet); on a loaded machine that
        // window stretched past a life's length. Signals are handled from
        // before the config is read, so wait for the first sign of life.
        let ready = Instant::now() + Duration::from_secs(60);
        while std::fs::metadata(self.dir.join(format!("sluice-{}.log", self.lives))).map_or(0, |m| m.len()) == 0
            && Instant::now() < ready
        {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "seed {:#x}: sluice life {} exited on its own with {status}:\n{}",
                self.s.seed,
                self.lives,
                self.log_tail()
            );
        }
        signal(&child, if kill { libc::SIGKILL } else { libc::SIGTERM });
        if kill {
            child.wait().unwrap();
            return;
        }
        let status = wait_timeout(&mut child, STOP_TIMEOUT).unwrap_or_else(|| {
            panic!("seed {:#x}: sluice did not stop within {STOP_TIMEOUT:?} of SIGTERM", self.s.seed)
        });
        assert!(
            status.signal().is_none() && status.success(),
            "seed {:#x}: sluice life {} ended with {status} after SIGTERM:\n{}",
            self.s.seed,
            self.lives,
            self.log_tail()
        );
    }

    fn writer_spec(&self, id: u32, until: Instant) -> WriterSpec {
        let millis = until.saturating_duration_since(Instant::now()).as_millis() as u64;
        WriterSpec {
            db: self.db.clone(),
            id,
            seed: self.s.seed,
            page_size: self.s.page_size,
            millis,
            rate: self.s.rate,
            autocheckpoint: self.s.autocheckpoint,
            extras: self.s.extras,
            lulls: self.s.lulls,
        }
    }

    fn spawn_writer(&self, spec: &WriterSpec) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("writer-{}.log", spec.id)))
            .unwrap();
        Command::new(std::env::current_exe().unwrap())
            .args(["torture_writer_process", "--exact", "--nocapture", "--test-threads", "1"])
            .env(WRITER_ENV, serde_json::to_string(spec).unwrap())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start a writer")
    }

    fn start_writers(&mut self, until: Instant) {
        for id in 0..self.s.writers {
            let child = self.spawn_writer(&self.writer_spec(id, until));
            self.writers.push((id, child));
        }
    }

    fn writers_running(&mut self) -> bool {
        self.writers.iter_mut().any(|(_, c)| c.try_wait().unwrap().is_none())
    }

    fn kill_and_restart_a_writer(&mut self, until: Instant) {
        let i = self.rng.random_range(0..self.writers.len());
        let (id, child) = &mut self.writers[i];
        if child.try_wait().unwrap().is_some() {
            return;
        }
        signal(child, libc::SIGKILL);
        child.wait().unwrap();
        let id = *id;
        let spec = self.writer_spec(id, until);
        self.writers[i] = (id, self.spawn_writer(&spec));
    }

    fn wait_writers(&mut self) {
        for (id, child) in &mut self.writers {
            let status = child.wait().unwrap();
            let log = std::fs::read_to_string(self.dir.join(format!("writer-{id}.log"))).unwrap_or_default();
            assert!(
                status.success(),
                "seed {:#x}: writer {id} (the application) saw an error: {status}\n{log}",
                self.s.seed
            );
        }
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling our own child, which has not been reaped.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// What a restore at one TXID held.
struct Restored {
    txid: u64,
    /// Per writer: how far it had got, and the digest of its tables.
    writers: BTreeMap<u32, (u64, u64)>,
}

/// Restore every TXID the replica lists; check integrity, content against
/// the replayed writers, and the latest restore against the live database.
fn verify(s: &Scenario, db: &Path, url: &str, out: &Path) -> usize {
    let seed = s.seed;
    let txids = listed_txids(url);
    assert!(!txids.is_empty(), "seed {seed:#x}: the replica lists no TXID");
    let mut restored = Vec::new();
    for &txid in &txids {
        restore(url, out, Some(txid));
        restored.push(
            inspect(out, txid, s.writers)
                .unwrap_or_else(|e| panic!("seed {seed:#x}: restore at TXID {txid:016x}: {e}")),
        );
    }
    for id in 0..s.writers {
        let mut model = Model::new(id, seed, s.page_size);
        let mut last_seq = 0;
        for r in &restored {
            let (seq, digest) = r.writers[&id];
            assert!(
                seq >= last_seq,
                "seed {seed:#x}: TXID {:016x} holds writer {id} at transaction {seq}, an earlier TXID at {last_seq}",
                r.txid
            );
            last_seq = seq;
            assert_eq!(
                digest,
                model.digest_at(seq),
                "seed {seed:#x}: TXID {:016x}: writer {id}'s tables differ from what it committed at its transaction {seq}",
                r.txid
            );
        }
    }
    restore(url, out, None);
    let live = Connection::open(db).unwrap();
    assert_same_image(
        &image(&live),
        &file_image(out, s.page_size),
        &format!("seed {seed:#x}: latest restore vs the live database"),
    );
    txids.len()
}

fn listed_txids(url: &str) -> Vec<u64> {
    let out = run_ok(sluice().args(["ltx", "-level", "all", "--json", url]));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut txids: Vec<u64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| u64::from_str_radix(r["max_txid"].as_str().unwrap(), 16).unwrap())
        .collect();
    txids.sort_unstable();
    txids.dedup();
    txids
}

fn restore(url: &str, out: &Path, txid: Option<u64>) {
    let _ = std::fs::remove_file(out);
    let mut cmd = sluice();
    cmd.args(["restore", "-o"]).arg(out);
    if let Some(t) = txid {
        cmd.args(["-txid", &format!("{t:016x}")]);
    }
    run_ok(cmd.arg(url));
}

fn inspect(path: &Path, txid: u64, writers: u32) -> Result<Restored, String> {
    let conn = Connection::open(path).map_err(|e| e.to_string())?;
    let check: String =
        conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).map_err(|e| format!("integrity_check: {e}"))?;
    if check != "ok" {
        return Err(format!("integrity_check: {check}"));
    }
    let mut out = Restored { txid, writers: BTreeMap::new() };
    for id in 0..writers {
        let seq: i64 = conn
            .query_row("SELECT seq FROM progress WHERE writer = ?1", [id], |r| r.get(0))
            .map_err(|e| format!("progress of writer {id}: {e}"))?;
        let digest = writer::digest(&conn, id).map_err(|e| format!("digest of writer {id}: {e}"))?;
        out.writers.insert(id, (seq as u64, digest));
    }
    Ok(out)
}
