//! End-to-end tests against a real S3-compatible server that verifies
//! SigV4 (SeaweedFS, started per test by tests/s3/start-seaweedfs.sh):
//! the DigitalOcean Spaces guide's commands and config files with `sluice`
//! in place of `litestream`, wrong credentials, and a fault-injecting proxy
//! (connection resets and 503 SlowDown) between sluice and the store.

mod common;

use common::proxy::{Fault, Policy, Proxy, Request};
use common::seaweed::{ACCESS_KEY, BUCKET, SECRET_KEY, Seaweed};
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Running sluice

/// `sluice` with no colours in its log (the assertions read it).
fn sl() -> Command {
    let mut cmd = sluice();
    cmd.env("NO_COLOR", "1");
    cmd
}

/// The guide's `export LITESTREAM_ACCESS_KEY_ID=... LITESTREAM_SECRET_ACCESS_KEY=...`.
fn with_env_keys(mut cmd: Command, id: &str, secret: &str) -> Command {
    cmd.env("LITESTREAM_ACCESS_KEY_ID", id).env("LITESTREAM_SECRET_ACCESS_KEY", secret);
    cmd
}

/// Remove ANSI colour sequences, should the log have any.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A long-running `sluice replicate` whose log goes to a file (a pipe
/// could fill up and stall it).
struct Replicator {
    child: Option<Child>,
    log: PathBuf,
}

impl Replicator {
    fn spawn(mut cmd: Command, log: PathBuf) -> Replicator {
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd.stdout(Stdio::null()).stderr(file).spawn().expect("start sluice replicate");
        Replicator { child: Some(child), log }
    }

    fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// SIGINT (sluice does a final sync), wait, return the log.
    fn stop(mut self) -> String {
        let mut child = self.child.take().unwrap();
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(45);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("sluice did not exit within 45 s of SIGINT:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = self.log();
        assert!(status.success(), "sluice replicate exited with {status}:\n{log}");
        log
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn output_text(out: &Output) -> String {
    strip_ansi(&format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn run_ok_text(cmd: &mut Command) -> String {
    output_text(&run_ok(cmd))
}

/// Keep the writer busy for `secs` seconds of randomised workload.
fn write_for(conn: &rusqlite::Connection, rng: &mut rand::rngs::StdRng, secs: f64) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < deadline {
        workload(conn, rng, 10);
    }
}

/// Restore `url` into `out` with the right credentials from the environment.
fn restore_url(url: &str, out: &Path) -> Vec<u64> {
    let _ = std::fs::remove_file(out);
    run_ok(with_env_keys(sl(), ACCESS_KEY, SECRET_KEY).args(["restore", "-o"]).arg(out).arg(url));
    file_image(out, 4096)
}

// ---------------------------------------------------------------------------
// The guide, command line

/// The guide's command-line usage: credentials from LITESTREAM_* in the
/// environment, `replicate DB URL` while the application writes, then
/// `restore -o my.db URL`; the restore equals the database page for page.
#[test]
fn command_line_replicate_with_writer_then_restore() {
    let s3 = Seaweed::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = s3.url("db");
    let conn = create_db(&db, 4096);
    let mut rng = seeded(1);
    workload(&conn, &mut rng, 50);

    let mut cmd = with_env_keys(sl(), ACCESS_KEY, SECRET_KEY);
    cmd.arg("replicate").arg(&db).arg(&url);
    let rep = Replicator::spawn(cmd, dir.path().join("replicate.log"));
    write_for(&conn, &mut rng, 4.0);
    let want = image(&conn);
    let log = rep.stop();
    assert!(!log.contains(SECRET_KEY), "the log shows the secret:\n{log}");

    let my_db = dir.path().join("my.db");
    let out = run_ok_text(with_env_keys(sl(), ACCESS_KEY, SECRET_KEY).args(["restore", "-o"]).arg(&my_db).arg(&url));
    assert!(out.contains("restored"), "{out}");
    assert_same_image(&want, &file_image(&my_db, 4096), &format!("command-line replica\n{log}"));
    // The restored copy is a working database with the same rows.
    let copy = rusqlite::Connection::open(&my_db).unwrap();
    let count = |c: &rusqlite::Connection| {
        c.query_row("SELECT count(*), total(length(b)) FROM t", [], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)?)))
            .unwrap()
    };
    assert_eq!(count(&conn), count(&copy));
    let check: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");

    // The plugin's settings on the command line (`-s`): credentials with
    // none in the environment, and a setting that replaces the
    // environment's (a wrong secret, refused by the store).
    let by_flag = dir.path().join("by-flag.db");
    let (id, secret) = (format!("access-key-id={ACCESS_KEY}"), format!("secret-access-key={SECRET_KEY}"));
    run_ok(sl().args(["restore", "-s", &id, "-s", &secret, "-o"]).arg(&by_flag).arg(&url));
    assert_same_image(&want, &file_image(&by_flag, 4096), "restored with -s credentials");
    let mut wrong = with_env_keys(sl(), ACCESS_KEY, SECRET_KEY);
    let out = wrong.args(["ltx", "-s", "secret-access-key=not-the-secret", &url]).output().unwrap();
    assert!(!out.status.success(), "a wrong secret given with -s was not used:\n{}", output_text(&out));
}

// ---------------------------------------------------------------------------
// The guide, configuration files

fn write_file(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

/// The guide's configuration files, with the Spaces endpoint replaced by
/// the local server: global keys from `${VAR}`s (with a writer running),
/// the expanded `type: s3` form with LITESTREAM_* keys from the
/// environment, and per-replica keys. Each restores page for page.
#[test]
fn config_files_from_the_guide() {
    let s3 = Seaweed::start();
    let dir = tempfile::tempdir().unwrap();
    let ep = s3.endpoint();

    // 1. Global access-key-id / secret-access-key, given as ${VAR}s.
    let db1 = dir.path().join("one.db");
    let conn = create_db(&db1, 4096);
    let mut rng = seeded(2);
    workload(&conn, &mut rng, 30);
    let cfg1 = write_file(
        &dir.path().join("one.yml"),
        &format!(
            "access-key-id: ${{SPACES_KEY_ID}}\nsecret-access-key: ${{SPACES_SECRET}}\n\ndbs:\n  - path: {}\n    monitor-interval: 50ms\n    replicas:\n      - url: s3://{BUCKET}/one?endpoint={ep}\n        sync-interval: 50ms\n",
            db1.display()
        ),
    );
    let mut cmd = sl();
    cmd.env("SPACES_KEY_ID", ACCESS_KEY).env("SPACES_SECRET", SECRET_KEY).args(["replicate", "-config"]).arg(&cfg1);
    let rep = Replicator::spawn(cmd, dir.path().join("one.log"));
    write_for(&conn, &mut rng, 3.0);
    let want = image(&conn);
    let log = rep.stop();
    assert!(!log.contains(SECRET_KEY), "the log shows the secret:\n{log}");
    // Restore by database path through the same config, and by URL.
    let out = dir.path().join("one-restored.db");
    run_ok(
        sl().env("SPACES_KEY_ID", ACCESS_KEY)
            .env("SPACES_SECRET", SECRET_KEY)
            .args(["restore", "-config"])
            .arg(&cfg1)
            .arg("-o")
            .arg(&out)
            .arg(&db1),
    );
    assert_same_image(&want, &file_image(&out, 4096), &format!("global keys from ${{VAR}}\n{log}"));
    assert_same_image(&want, &restore_url(&s3.url("one"), &out), "global keys, restored by URL");
    drop(conn);

    // 2. The expanded form: type, bucket, path, endpoint, region; keys
    //    from LITESTREAM_* as in the guide's command-line section.
    let db2 = dir.path().join("two.db");
    let conn = create_db(&db2, 4096);
    let cfg2 = write_file(
        &dir.path().join("two.yml"),
        &format!(
            "dbs:\n  - path: {}\n    replicas:\n      - type: s3\n        bucket:   {BUCKET}\n        path:     two\n        endpoint: {ep}\n        region:   us-east-1   # set to your region\n        force-path-style: true\n",
            db2.display()
        ),
    );
    for step in 0..3 {
        workload(&conn, &mut rng, 40);
        run_ok(with_env_keys(sl(), ACCESS_KEY, SECRET_KEY).args(["replicate", "-once", "-config"]).arg(&cfg2));
        let want = image(&conn);
        let out = dir.path().join("two-restored.db");
        let _ = std::fs::remove_file(&out);
        run_ok(
            with_env_keys(sl(), ACCESS_KEY, SECRET_KEY)
                .args(["restore", "-config"])
                .arg(&cfg2)
                .arg("-o")
                .arg(&out)
                .arg(&db2),
        );
        assert_same_image(&want, &file_image(&out, 4096), &format!("expanded form, step {step}"));
    }
    // Also without force-path-style: an explicit endpoint implies path style.
    let cfg2b = write_file(
        &dir.path().join("two-b.yml"),
        &format!(
            "dbs:\n  - path: {}\n    replicas:\n      - type: s3\n        bucket: {BUCKET}\n        path: two\n        endpoint: {ep}\n        region: us-east-1\n",
            db2.display()
        ),
    );
    let out = dir.path().join("two-b.db");
    run_ok(
        with_env_keys(sl(), ACCESS_KEY, SECRET_KEY)
            .args(["restore", "-config"])
            .arg(&cfg2b)
            .arg("-o")
            .arg(&out)
            .arg(&db2),
    );
    assert_same_image(&image(&conn), &file_image(&out, 4096), "expanded form without force-path-style");
    drop(conn);

    // 3. Per-replica keys; the environment's (wrong) keys must not be used.
    let db3 = dir.path().join("three.db");
    let conn = create_db(&db3, 4096);
    let cfg3 = write_file(
        &dir.path().join("three.yml"),
        &format!(
            "dbs:\n  - path: {}\n    replicas:\n      - url: s3://{BUCKET}/three?endpoint={ep}\n        access-key-id: {ACCESS_KEY}\n        secret-access-key: {SECRET_KEY}\n",
            db3.display()
        ),
    );
    for _ in 0..2 {
        workload(&conn, &mut rng, 40);
        run_ok(
            with_env_keys(sl(), "AKIAWRONGWRONGWRONG", "not-the-secret")
                .args(["replicate", "-once", "-config"])
                .arg(&cfg3),
        );
    }
    let out = dir.path().join("three-restored.db");
    run_ok(
        with_env_keys(sl(), "AKIAWRONGWRONGWRONG", "not-the-secret")
            .args(["restore", "-config"])
            .arg(&cfg3)
            .arg("-o")
            .arg(&out)
            .arg(&db3),
    );
    assert_same_image(&image(&conn), &file_image(&out, 4096), "per-replica keys");
}

// ---------------------------------------------------------------------------
// Wrong credentials

fn assert_clear_access_error(text: &str, key_id: &str, secret: &str, what: &str) {
    assert!(text.contains("access denied"), "{what}: does not say access denied:\n{text}");
    assert!(text.contains(&format!("\"{key_id}\"")), "{what}: does not name the access key id {key_id}:\n{text}");
    assert!(!text.contains(secret), "{what}: prints the secret:\n{text}");
}

/// Replicating and restoring with a wrong secret or an unknown key id fail
/// with an error naming the key id (never the secret); the database file
/// is byte for byte what it was, the replica stays empty, and restore
/// creates no output.
#[test]
fn wrong_credentials_fail_clearly_and_touch_nothing() {
    let s3 = Seaweed::start();
    let dir = tempfile::tempdir().unwrap();
    let ep = s3.endpoint();
    let db = dir.path().join("app.db");
    {
        let conn = create_db(&db, 4096);
        let mut rng = seeded(3);
        workload(&conn, &mut rng, 60);
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    let wrong_secret = "wr0ng/SECRET+do-not-print";
    for (key_id, secret, expect) in
        [(ACCESS_KEY, wrong_secret, "SignatureDoesNotMatch"), ("AKIDUNKNOWN123", wrong_secret, "InvalidAccessKeyId")]
    {
        let what = format!("key id {key_id}");
        // Per-replica keys in the config; a short shutdown-sync-timeout so
        // that -once gives up on the unshipped snapshot quickly.
        let cfg = write_file(
            &dir.path().join("bad.yml"),
            &format!(
                "shutdown-sync-timeout: 2s\ndbs:\n  - path: {}\n    replicas:\n      - url: s3://{BUCKET}/bad?endpoint={ep}\n        access-key-id: {key_id}\n        secret-access-key: {secret}\n",
                db.display()
            ),
        );
        let started = Instant::now();
        let out = sl().args(["replicate", "-once", "-config"]).arg(&cfg).output().unwrap();
        let text = output_text(&out);
        assert!(!out.status.success(), "{what}: replicate -once succeeded:\n{text}");
        assert!(started.elapsed() < Duration::from_secs(20), "{what}: took {:?}", started.elapsed());
        assert_clear_access_error(&text, key_id, secret, &what);
        assert!(text.contains(expect), "{what}: does not pass on the store's {expect}:\n{text}");
        assert_eq!(std::fs::read(&db).unwrap(), before, "{what}: the database file changed");

        // Restore with the same wrong keys, from the environment.
        let restored = dir.path().join("restored.db");
        let out = with_env_keys(sl(), key_id, secret)
            .args(["restore", "-o"])
            .arg(&restored)
            .arg(s3.url("db"))
            .output()
            .unwrap();
        let text = output_text(&out);
        assert!(!out.status.success(), "{what}: restore succeeded:\n{text}");
        assert_clear_access_error(&text, key_id, secret, &format!("restore with {what}"));
        for suffix in ["", ".tmp", "-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{suffix}", restored.display()));
            assert!(!p.exists(), "{what}: restore created {}", p.display());
        }
    }
    // Nothing reached the replica.
    let listing =
        run_ok(with_env_keys(sl(), ACCESS_KEY, SECRET_KEY).args(["ltx", "-level", "all", "--json", &s3.url("bad")]));
    let rows: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    assert_eq!(rows.as_array().map(|a| a.len()), Some(0), "segments reached the replica: {rows}");
    // The database still opens and its content is intact.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
}

/// The guide's command line (`replicate -once DB URL`, keys from the
/// environment) with a wrong secret: an access error cannot fix itself, so
/// `-once` should fail at once and its final error should say why.
#[test]
fn wrong_secret_on_the_command_line_fails_fast_with_the_cause() {
    let s3 = Seaweed::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    workload(&create_db(&db, 4096), &mut seeded(4), 20);
    let started = Instant::now();
    let out = with_env_keys(sl(), ACCESS_KEY, "wrong-secret")
        .args(["replicate", "-once"])
        .arg(&db)
        .arg(s3.url("db"))
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?} to give up:\n{text}", started.elapsed());
    let last = text.lines().rev().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(last.contains("access denied") && last.contains(ACCESS_KEY), "final error does not say why: {last}");
}

// ---------------------------------------------------------------------------
// Fault injection

/// A proxy in front of `upstream` that injects a fault into every
/// `every`-th request (alternating resets and 503 SlowDown), at most
/// `max_faults` times (the proxy itself is `common::proxy`).
struct FaultProxy {
    proxy: Proxy,
    resets: Arc<AtomicUsize>,
    slowdowns: Arc<AtomicUsize>,
}

impl FaultProxy {
    fn start(upstream: u16, every: usize, max_faults: usize) -> FaultProxy {
        let (resets, slowdowns): (Arc<AtomicUsize>, Arc<AtomicUsize>) = Default::default();
        let faults = AtomicUsize::new(0);
        let (r, s) = (resets.clone(), slowdowns.clone());
        let policy: Policy = Arc::new(move |req: &Request| {
            if !req.n.is_multiple_of(every) {
                return Fault::None;
            }
            let k = faults.fetch_add(1, Ordering::SeqCst);
            if k >= max_faults {
                Fault::None
            } else if k.is_multiple_of(2) {
                r.fetch_add(1, Ordering::SeqCst);
                Fault::Reset
            } else {
                s.fetch_add(1, Ordering::SeqCst);
                Fault::SlowDown
            }
        });
        FaultProxy { proxy: Proxy::start(upstream, policy), resets, slowdowns }
    }

    fn endpoint(&self) -> String {
        self.proxy.endpoint()
    }
}

/// Replicate through a fault proxy (every `every`-th request faulted, at
/// most `max_faults` times) while a writer runs for `secs`, stop sluice,
/// and restore straight from the store (no proxy): it must equal the
/// database exactly, and the retries must be logged without a flood.
fn replicate_through_faults(seed: u64, every: usize, max_faults: usize, secs: f64) {
    let s3 = Seaweed::start();
    let proxy = FaultProxy::start(s3.port, every, max_faults);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, 4096);
    // The workload's own `wal_checkpoint(TRUNCATE)` can never get past
    // sluice's read lock and waits out the whole busy timeout (5 s in
    // create_db); keep that short so the writer keeps the replica busy.
    conn.busy_timeout(Duration::from_millis(250)).unwrap();
    let mut rng = seeded(seed);
    workload(&conn, &mut rng, 50);
    let cfg = write_file(
        &dir.path().join("faulty.yml"),
        &format!(
            "access-key-id: {ACCESS_KEY}\nsecret-access-key: {SECRET_KEY}\ndbs:\n  - path: {}\n    monitor-interval: 50ms\n    replicas:\n      - url: s3://{BUCKET}/faulty?endpoint={}\n        sync-interval: 50ms\n",
            db.display(),
            proxy.endpoint()
        ),
    );
    let mut cmd = sl();
    cmd.args(["replicate", "-config"]).arg(&cfg);
    let rep = Replicator::spawn(cmd, dir.path().join("faulty.log"));
    write_for(&conn, &mut rng, secs);
    let want = image(&conn);
    let log = rep.stop();

    let (requests, resets, slowdowns) = (
        proxy.proxy.requests.load(Ordering::SeqCst),
        proxy.resets.load(Ordering::SeqCst),
        proxy.slowdowns.load(Ordering::SeqCst),
    );
    let stats = format!("{requests} requests, {resets} resets, {slowdowns} SlowDown");
    assert!(resets > 0 && slowdowns > 0, "no faults injected ({stats})\n{log}");
    let got = restore_url(&s3.url("faulty"), &dir.path().join("restored.db"));
    assert_same_image(&want, &got, &format!("through the fault proxy ({stats})\n{log}"));

    // The failures were noticed and reported once per bad spell, at WARN,
    // not as errors that will not fix themselves, and not once per request.
    let warns: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && (l.contains("replica sync failed") || l.contains("retrying")))
        .collect();
    assert!(!warns.is_empty(), "the retries were not logged:\n{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "resets and SlowDown were reported as errors:\n{}", errors.join("\n"));
    assert!(warns.len() <= 3, "{} warnings for {} faults:\n{}", warns.len(), resets + slowdowns, warns.join("\n"));
    assert!(log.contains("recovered"), "no word that the replica recovered:\n{log}");
    eprintln!("fault proxy: {stats}; {} warnings", warns.len());
    if std::env::var_os("S3_TEST_LOG").is_some() {
        eprintln!("{log}");
    }
}

/// A bad spell: a reset and a 503 SlowDown (on the 4th and 8th requests)
/// between sluice and the store, with a writer running; sluice retries,
/// recovers, and the restore is exact.
#[test]
fn faults_between_sluice_and_the_store_still_restore_exactly() {
    replicate_through_faults(5, 4, 2, 3.0);
}

/// Faults that never stop: every 10th request reset or SlowDown for the
/// whole run, as on DigitalOcean Spaces ("connection reset by peer" is
/// routine there): each failed request is retried on the spot, the
/// replica keeps up, and the final sync at SIGINT ships everything.
#[test]
fn sustained_faults_still_restore_exactly() {
    replicate_through_faults(6, 10, usize::MAX, 5.0);
}

/// Restore over a flaky link: a reset and a 503 SlowDown while restoring
/// through the proxy. Transient errors should be retried (Litestream's
/// AWS SDK does), not end the restore.
#[test]
fn restore_through_faults_retries() {
    let s3 = Seaweed::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, 4096);
    let mut rng = seeded(7);
    for _ in 0..6 {
        workload(&conn, &mut rng, 30);
        run_ok(with_env_keys(sl(), ACCESS_KEY, SECRET_KEY).args(["replicate", "-once"]).arg(&db).arg(s3.url("db")));
    }
    let proxy = FaultProxy::start(s3.port, 3, 2);
    let url = format!("s3://{BUCKET}/db?endpoint={}", proxy.endpoint());
    let out = dir.path().join("restored.db");
    let res = with_env_keys(sl(), ACCESS_KEY, SECRET_KEY).args(["restore", "-o"]).arg(&out).arg(&url).output().unwrap();
    let text = output_text(&res);
    let faults = proxy.resets.load(Ordering::SeqCst) + proxy.slowdowns.load(Ordering::SeqCst);
    assert!(faults > 0, "no faults injected:\n{text}");
    assert!(res.status.success(), "restore gave up after {faults} faults:\n{text}");
    assert_same_image(&image(&conn), &file_image(&out, 4096), "restore through faults");
}

// ---------------------------------------------------------------------------
// part-size and concurrency

/// Litestream's `part-size` and `concurrency` shape a large upload: the
/// number of part requests follows `part-size`, and with `concurrency` the
/// parts are in flight together. The proxy holds every part request for
/// `HOLD` before forwarding it, so a part that starts within `HOLD` of
/// another overlaps it; one at a time, each starts only after the one
/// before was answered (this holds however slow the machine).
#[test]
fn part_size_and_concurrency_shape_large_uploads() {
    use std::sync::Mutex;
    const HOLD: Duration = Duration::from_millis(700);
    let s3 = Seaweed::start();
    let starts: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let seen = starts.clone();
    let proxy = Proxy::start(
        s3.port,
        Arc::new(move |r| {
            if r.method != "PUT" || !r.target.contains("partNumber=") {
                return Fault::None;
            }
            let prefix = r.target.split('/').nth(2).unwrap_or("").to_string();
            seen.lock().unwrap().push((prefix, Instant::now()));
            Fault::Delay(HOLD)
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("big.db");
    let conn = create_db(&db, 4096);
    conn.execute_batch("CREATE TABLE big(b BLOB)").unwrap();
    for _ in 0..22 {
        conn.execute("INSERT INTO big VALUES (randomblob(1000000))", []).unwrap();
    }
    let want = image(&conn);
    let run = |prefix: &str, tuning: &str| {
        let config = dir.path().join(format!("{prefix}.yml"));
        let url = format!("s3://{BUCKET}/{prefix}?endpoint={}", proxy.endpoint());
        // Each run its own local state, so each takes a whole snapshot.
        let meta = dir.path().join(format!("{prefix}-meta"));
        let text = format!(
            "dbs:\n  - path: {}\n    meta-path: {}\n    replica:\n      url: {url}\n{tuning}",
            db.display(),
            meta.display()
        );
        std::fs::write(&config, text).unwrap();
        run_ok(with_env_keys(sl(), ACCESS_KEY, SECRET_KEY).args(["replicate", "-once", "-config"]).arg(&config));
        let out = dir.path().join(format!("{prefix}-restored.db"));
        run_ok(with_env_keys(sl(), ACCESS_KEY, SECRET_KEY).args(["restore", "-o"]).arg(&out).arg(&url));
        assert_same_image(&want, &file_image(&out, 4096), prefix);
        let times: Vec<Instant> = starts.lock().unwrap().iter().filter(|(p, _)| p == prefix).map(|(_, t)| *t).collect();
        let overlapping = times.iter().map(|a| times.iter().filter(|b| **b >= *a && **b < *a + HOLD).count()).max();
        (times.len(), overlapping.unwrap_or(0))
    };
    let (parts, together) = run("serial", "      part-size: 5MiB\n");
    assert!(parts >= 4, "{parts} parts of 5 MiB for a 22 MB snapshot");
    assert_eq!(together, 1, "parts overlapped without concurrency");
    let (parts4, together4) = run("parallel", "      part-size: 5MiB\n      concurrency: 4\n");
    assert_eq!(parts4, parts, "the same part size gives the same parts");
    assert!(together4 >= 2, "no parts in flight together with concurrency: 4");
    let (big_parts, _) = run("bigparts", "      part-size: 10MiB\n");
    assert!(big_parts * 2 <= parts + 1, "{big_parts} parts of 10 MiB against {parts} of 5 MiB");
}

/// Keys from the AWS shared credentials file, as Litestream's SDK reads it
/// (`AWS_SHARED_CREDENTIALS_FILE`, `AWS_PROFILE`), for `replicate`,
/// `restore` and `plugin check` alike; without them the store refuses.
#[test]
fn the_shared_credentials_file_and_profile_are_read() {
    let s3 = Seaweed::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, 4096);
    workload(&conn, &mut seeded(5), 40);
    let file = dir.path().join("credentials");
    let text = format!(
        "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[backup]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    );
    std::fs::write(&file, text).unwrap();
    let url = s3.url("shared");
    let with_file = |profile: &str| {
        let mut cmd = sl();
        cmd.env("AWS_SHARED_CREDENTIALS_FILE", &file).env("AWS_PROFILE", profile);
        cmd
    };
    run_ok(with_file("backup").args(["replicate", "-once"]).arg(&db).arg(&url));
    let out = dir.path().join("restored.db");
    run_ok(with_file("backup").args(["restore", "-o"]).arg(&out).arg(&url));
    assert_same_image(&image(&conn), &file_image(&out, 4096), "restored with the profile's keys");
    let checked = with_file("backup").args(["plugin", "check"]).arg(s3.url("check")).output().unwrap();
    assert!(checked.status.success(), "plugin check:\n{}", String::from_utf8_lossy(&checked.stdout));
    let wrong = with_file("default").args(["restore", "-o"]).arg(dir.path().join("x.db")).arg(&url).output().unwrap();
    assert!(!wrong.status.success(), "the default profile's wrong keys restored");
}
