//! End-to-end tests against a real S3-compatible server that verifies
//! SigV4 (SeaweedFS, started per test by tests/s3/start-seaweedfs.sh):
//! the DigitalOcean Spaces guide's commands and config files with `sluice`
//! in place of `litestream`, wrong credentials, and a fault-injecting proxy
//! (connection resets and 503 SlowDown) between sluice and the store.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const ACCESS_KEY: &str = "sluice-test";
const SECRET_KEY: &str = "sluice-test-secret";
const BUCKET: &str = "sluice-test";

// ---------------------------------------------------------------------------
// SeaweedFS

/// A SeaweedFS S3 server on 127.0.0.1, stopped (its whole process group)
/// when dropped.
struct Seaweed {
    port: u16,
    pid: Option<i32>,
    /// Removed after the server is stopped (fields drop after `drop`).
    _dir: tempfile::TempDir,
}

/// Whether every port the script will use is free right now.
fn ports_free(port: u16) -> bool {
    (0..=5).chain(10000..=10005).all(|off| TcpListener::bind(("127.0.0.1", port + off)).is_ok())
}

impl Seaweed {
    fn start() -> Seaweed {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/s3/start-seaweedfs.sh");
        let mut last_err = String::new();
        for _ in 0..5 {
            // 12000..22000: the helper ports (+1..+5, +10000..+10005) stay
            // below Linux's ephemeral range, so outgoing connections do not
            // take them while the server starts.
            let port = (0..50)
                .map(|_| 12000 + (rand::random::<u16>() % 10000))
                .find(|&p| ports_free(p))
                .expect("no free port range");
            let dir = tempfile::tempdir().unwrap();
            let out = Command::new("bash")
                .arg(&script)
                .arg(port.to_string())
                .arg(dir.path().join("weed"))
                .output()
                .expect("run start-seaweedfs.sh");
            let pid =
                std::fs::read_to_string(dir.path().join("weed/weed.pid")).ok().and_then(|s| s.trim().parse().ok());
            let server = Seaweed { port, pid, _dir: dir };
            if out.status.success() && pid.is_some() {
                return server;
            }
            last_err = format!("port {port}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
            drop(server);
        }
        panic!("could not start SeaweedFS: {last_err}");
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The replica URL for `prefix`, MinIO style (`?endpoint=`).
    fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}?endpoint={}", self.endpoint())
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        let Some(pid) = self.pid else { return };
        // SAFETY: signalling the process group the script started with setsid.
        unsafe {
            libc::kill(-pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        // SAFETY: signal 0 only checks that the process still exists.
        while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

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

/// What the proxy does to a request.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    None,
    /// Close the client's connection with a TCP reset, answering nothing.
    Reset,
    /// Answer `503 Slow Down` with S3's XML error.
    SlowDown,
}

/// An HTTP/1.1 proxy on 127.0.0.1 in front of `upstream` that injects a
/// fault into every `every`-th request (alternating resets and 503
/// SlowDown), at most `max_faults` times. Requests are forwarded byte for
/// byte, Host header included, so SigV4 signatures made for the proxy's
/// address verify upstream.
struct FaultProxy {
    port: u16,
    requests: Arc<AtomicUsize>,
    resets: Arc<AtomicUsize>,
    slowdowns: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    fn start(upstream: u16, every: usize, max_faults: usize) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let p = FaultProxy {
            port,
            requests: Arc::default(),
            resets: Arc::default(),
            slowdowns: Arc::default(),
            stop: Arc::default(),
        };
        let (requests, resets, slowdowns, stop) =
            (p.requests.clone(), p.resets.clone(), p.slowdowns.clone(), p.stop.clone());
        let faults = Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let (requests, resets, slowdowns, faults) =
                    (requests.clone(), resets.clone(), slowdowns.clone(), faults.clone());
                std::thread::spawn(move || {
                    let decide = || {
                        let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
                        if n % every != 0 {
                            return Fault::None;
                        }
                        let k = faults.fetch_add(1, Ordering::SeqCst);
                        if k >= max_faults {
                            Fault::None
                        } else if k % 2 == 0 {
                            resets.fetch_add(1, Ordering::SeqCst);
                            Fault::Reset
                        } else {
                            slowdowns.fetch_add(1, Ordering::SeqCst);
                            Fault::SlowDown
                        }
                    };
                    let _ = proxy_connection(client, upstream, decide);
                });
            }
        });
        p
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Read a request head (through the blank line); None at a clean EOF.
fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return if head.is_empty() { Ok(None) } else { Err(std::io::ErrorKind::UnexpectedEof.into()) };
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            return Ok(Some(head));
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Copy a request body (Content-Length or chunked) from `r` to `w`.
fn copy_body(head: &str, r: &mut impl BufRead, w: &mut impl Write) -> std::io::Result<()> {
    if header(head, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        loop {
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line)?;
            w.write_all(&line)?;
            let size_text = String::from_utf8_lossy(&line);
            let size = usize::from_str_radix(size_text.trim().split(';').next().unwrap_or("0").trim(), 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    let mut t = Vec::new();
                    r.read_until(b'\n', &mut t)?;
                    w.write_all(&t)?;
                    if t == b"\r\n" || t == b"\n" || t.is_empty() {
                        return Ok(());
                    }
                }
            }
            std::io::copy(&mut r.take(size as u64 + 2), w)?;
        }
    }
    let len: u64 = header(head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let copied = std::io::copy(&mut r.take(len), w)?;
    if copied != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Make closing the socket abort the connection with a TCP RST.
fn set_linger_zero(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a socket we own, with a correctly sized struct.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as u32,
        );
    }
}

/// One client connection: requests go upstream one by one (parsed, so each
/// can be faulted); responses are copied back verbatim by another thread.
/// Clients do not pipeline, so an injected answer never interleaves with
/// an upstream one.
fn proxy_connection(client: TcpStream, upstream_port: u16, mut decide: impl FnMut() -> Fault) -> std::io::Result<()> {
    let upstream = TcpStream::connect(("127.0.0.1", upstream_port))?;
    let mut to_client = client.try_clone()?;
    let mut from_upstream = upstream.try_clone()?;
    let aborted = Arc::new(AtomicBool::new(false));
    let aborted2 = aborted.clone();
    let responses = std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_upstream, &mut to_client);
        if !aborted2.load(Ordering::SeqCst) {
            let _ = to_client.shutdown(Shutdown::Write);
        }
    });
    let mut reader = BufReader::new(client.try_clone()?);
    let mut to_upstream = upstream.try_clone()?;
    let result = (|| -> std::io::Result<()> {
        while let Some(head) = read_head(&mut reader)? {
            let text = String::from_utf8_lossy(&head).into_owned();
            match decide() {
                Fault::None => {
                    to_upstream.write_all(&head)?;
                    copy_body(&text, &mut reader, &mut to_upstream)?;
                    to_upstream.flush()?;
                }
                Fault::Reset => {
                    // The socket closes (with RST) when the last handle goes.
                    aborted.store(true, Ordering::SeqCst);
                    set_linger_zero(&client);
                    return Ok(());
                }
                Fault::SlowDown => {
                    let expect_continue =
                        header(&text, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
                    if !expect_continue {
                        copy_body(&text, &mut reader, &mut std::io::sink())?;
                    }
                    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>fault-proxy</RequestId></Error>";
                    let answer = format!(
                        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let mut w = client.try_clone()?;
                    w.write_all(answer.as_bytes())?;
                    w.flush()?;
                    let _ = upstream.shutdown(Shutdown::Both);
                    let _ = client.shutdown(Shutdown::Write);
                    return Ok(());
                }
            }
        }
        Ok(())
    })();
    let _ = upstream.shutdown(Shutdown::Both);
    let _ = responses.join();
    result
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
        proxy.requests.load(Ordering::SeqCst),
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
