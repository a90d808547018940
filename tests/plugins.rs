//! Plugin integration tests: the bundled file plugin against the
//! conformance suite (in-process and through the real `sluice` binary),
//! the `plugin info|export|check` commands, and the sandbox against the
//! hostile test plugin (`tests/plugins/hostile`): every limit as an
//! obeyed/violated pair, with a neighbouring database on the bundled file
//! plugin kept busy in the same task while the hostile call runs.

use sluice::plugin::conformance::{self, Outcome};
use sluice::plugin::{
    ErrorKind, Labels, LoadedPlugin, MAX_LIVE_INSTANCES, ObjectMeta, PluginError, PluginStore, Precondition,
    PutOptions, Runtime, SandboxConfig, StorageError, WARM_IDLE,
};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "common/hostile.rs"]
mod hostile;
use hostile::{hostile_wasm, test_target};

// ---------------------------------------------------------------------------
// Building and loading plugins
// ---------------------------------------------------------------------------

fn component_cache() -> PathBuf {
    test_target().join("component-cache")
}

/// Tests that measure memory or time, or push the sandbox, run one at a
/// time so they do not disturb each other's figures on a small machine.
/// An async lock: the guard is held across the test's awaits.
async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// A runtime, both plugins, and a scratch directory.
struct Fixture {
    dir: tempfile::TempDir,
    hostile: Arc<LoadedPlugin>,
    file: Arc<LoadedPlugin>,
    _runtime: Arc<Runtime>,
}

async fn fixture() -> Fixture {
    let wasm = hostile_wasm();
    let runtime = Runtime::new(Some(component_cache())).expect("plugin runtime starts");
    let hostile = runtime.load_file(wasm).await.unwrap_or_else(|e| panic!("hostile plugin loads: {e}"));
    assert_eq!(hostile.info().name, "hostile");
    assert!(hostile.info().needs_directory);
    let file = runtime.load_bundled("file").await.unwrap_or_else(|e| panic!("file plugin loads: {e}"));
    Fixture { dir: tempfile::tempdir().expect("tempdir"), hostile, file, _runtime: runtime }
}

/// Distinctive labels, so a test can check an error names all three.
fn labels(name: &str) -> Labels {
    Labels { plugin: String::new(), database: database_label(name), replica: replica_label(name) }
}

fn database_label(name: &str) -> String {
    format!("/srv/db/{name}-victim.sqlite")
}

fn replica_label(name: &str) -> String {
    format!("{name}-replica-7f3a")
}

fn settings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl Fixture {
    /// The replica directory `name` (granted to plugins that need one).
    fn replica_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("replica-{name}"))
    }

    fn store(
        &self,
        plugin: &Arc<LoadedPlugin>,
        name: &str,
        pairs: &[(&str, &str)],
        sandbox: SandboxConfig,
    ) -> PluginStore {
        let url = format!("file://{}", self.replica_dir(name).display());
        let settings = settings(pairs);
        let sb = sandbox.resolve(plugin, &url, &settings).expect("sandbox resolves");
        PluginStore::new(plugin.clone(), url, settings, sb, labels(name)).unwrap()
    }

    fn hostile(&self, name: &str, pairs: &[(&str, &str)], sandbox: SandboxConfig) -> PluginStore {
        self.store(&self.hostile, name, pairs, sandbox)
    }

    /// A second database on the bundled file plugin, in the same process.
    fn neighbour(&self) -> Arc<PluginStore> {
        Arc::new(self.store(&self.file, "neighbour", &[], SandboxConfig::default()))
    }
}

/// Put options whose metadata overrides the hostile plugin's settings for
/// one call.
fn params(pairs: &[(&str, &str)]) -> PutOptions {
    PutOptions { precondition: Precondition::None, metadata: settings(pairs), content_sha256: None }
}

/// One hostile put in a fresh session.
async fn hostile_put(store: &PluginStore, pairs: &[(&str, &str)]) -> Result<ObjectMeta, PluginError> {
    let mut session = store.session().await?;
    session.put("probe/object", b"probe", &params(pairs)).await
}

fn meta_value<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A violation's message must say which plugin, database and replica.
fn assert_names_everyone(err: &PluginError, name: &str) {
    let text = err.to_string();
    for part in [
        "plugin `hostile`".to_string(),
        format!("database `{}`", database_label(name)),
        format!("replica `{}`", replica_label(name)),
    ] {
        assert!(text.contains(&part), "error does not name {part}: {text}");
    }
}

// ---------------------------------------------------------------------------
// A neighbour that keeps working
// ---------------------------------------------------------------------------

/// What the neighbouring database did while a hostile call ran.
#[derive(Debug)]
struct Neighbourhood {
    /// Round trips (fresh session, put, get, compare) the neighbouring
    /// database completed while the hostile call was still running.
    during: usize,
    /// Round trips it completed after the hostile call returned.
    after: usize,
    /// Timer wake-ups served in the hostile call's own task while it ran:
    /// proof that a busy plugin yields its thread.
    heartbeats: usize,
    /// How long the hostile call took.
    hostile_elapsed: Duration,
}

/// Put and read back an object through a fresh session of the file plugin.
async fn round_trip(store: &PluginStore, i: usize) -> Result<(), PluginError> {
    let mut session = store.session().await?;
    let key = format!("neighbour/object-{}", i % 4);
    let data = format!("round trip {i} ").repeat(64).into_bytes();
    session.put(&key, &data, &params(&[])).await?;
    let back = session.get(&key, None).await?;
    assert_eq!(back, data, "neighbour read back different bytes in round trip {i}");
    Ok(())
}

/// Run `hostile` while the neighbouring database (its own task, as every
/// database is in sluice) does round trips, and while a heartbeat ticks
/// in the hostile call's own task; all joined with `tokio::join!`. The
/// neighbour keeps going until the hostile call has returned and two more
/// round trips succeeded after it.
async fn alongside<T>(neighbour: &Arc<PluginStore>, hostile: impl Future<Output = T>) -> (T, Neighbourhood) {
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let hostile = async {
        let out = hostile.await;
        done.store(true, Ordering::SeqCst);
        (out, start.elapsed())
    };
    let heartbeat = async {
        let mut beats = 0;
        while !done.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(1)).await;
            beats += 1;
        }
        beats
    };
    let neighbour = tokio::spawn({
        let (store, done) = (neighbour.clone(), done.clone());
        async move {
            let (mut during, mut after) = (0usize, 0usize);
            while !done.load(Ordering::SeqCst) || after < 2 {
                let i = during + after;
                round_trip(&store, i).await.map_err(|e| format!("neighbour round trip {i} failed: {e}"))?;
                if done.load(Ordering::SeqCst) {
                    after += 1;
                } else {
                    during += 1;
                }
            }
            Ok::<_, String>((during, after))
        }
    });
    let all = async { tokio::join!(hostile, heartbeat, neighbour) };
    let ((out, hostile_elapsed), heartbeats, neighbourhood) = tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .expect("the hostile call or its neighbour hung for 2 minutes");
    let (during, after) = neighbourhood.expect("neighbour task").unwrap_or_else(|e| panic!("{e}"));
    let n = Neighbourhood { during, after, heartbeats, hostile_elapsed };
    eprintln!("{n:?}");
    (out, n)
}

/// Violations are made to last (`delay-ms` of busy work first) so the
/// neighbour demonstrably works while the hostile plugin runs.
const VIOLATION_DELAY_MS: &str = "600";

fn assert_neighbour_kept_working(n: &Neighbourhood, what: &str) {
    assert!(n.after >= 2, "{what}: neighbour stopped after the violation: {n:?}");
    assert!(n.during >= 3, "{what}: neighbour made too little progress while the hostile call ran: {n:?}");
    assert!(n.heartbeats >= 5, "{what}: the hostile call kept its thread to itself: {n:?}");
}

// ---------------------------------------------------------------------------
// The bundled file plugin and the CLI
// ---------------------------------------------------------------------------

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("SLUICE_CACHE_DIR", component_cache())
        .env_remove("RUST_LOG")
        .output()
        .expect("the sluice binary runs")
}

fn stdout_of(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "`{what}` failed with {}:\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Check `plugin check` output: every case passed, and the summary line
/// reads "16 passed, 0 failed, 0 skipped" (at least 16 cases).
fn assert_check_passed(stdout: &str) {
    let summary =
        stdout.lines().find(|l| l.contains(" passed, ")).unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    let numbers: Vec<usize> =
        summary.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
    assert_eq!(numbers.len(), 3, "odd summary line {summary:?}");
    let (passed, failed) = (numbers[0], numbers[1]);
    assert_eq!(failed, 0, "conformance failures:\n{stdout}");
    assert!(passed >= 16, "only {passed} cases passed:\n{stdout}");
    assert!(summary.starts_with(&format!("{passed} passed, 0 failed")), "summary {summary:?}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("PASS ")).count(), passed, "PASS lines vs summary:\n{stdout}");
    assert!(!stdout.lines().any(|l| l.starts_with("FAIL ")), "{stdout}");
}

#[test]
fn file_plugin_passes_conformance_via_cli() {
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("replica");
    let out = sluice(&["plugin", "check", replica.to_str().unwrap()]);
    let stdout = stdout_of(&out, "sluice plugin check DIR");
    assert!(stdout.contains("checking plugin `file`"), "{stdout}");
    assert_check_passed(&stdout);
    // The suite cleans up after itself.
    let left: Vec<_> = std::fs::read_dir(&replica).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "plugin check left {left:?} in the replica directory");
}

#[tokio::test]
async fn file_plugin_passes_conformance_in_process() {
    let runtime = Runtime::new(Some(component_cache())).unwrap();
    let plugin = runtime.load_bundled("file").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("replica").display());
    let sandbox = SandboxConfig::default().resolve(&plugin, &url, &[]).unwrap();
    let store = PluginStore::new(plugin, url, Vec::new(), sandbox, labels("conformance")).unwrap();
    let results = conformance::run(&store, |_| {}).await;
    let failures: Vec<_> = results.iter().filter(|r| !matches!(r.outcome, Outcome::Pass)).collect();
    assert!(failures.is_empty(), "file plugin conformance: {failures:#?}");
    assert!(results.len() >= 16, "only {} cases ran", results.len());
}

#[test]
fn plugin_info_export_and_check_with_exported_file() {
    let info = stdout_of(&sluice(&["plugin", "info", "file"]), "sluice plugin info file");
    assert!(info.lines().any(|l| l.starts_with("name:") && l.trim_end().ends_with(" file")), "{info}");
    assert!(info.contains("source:            bundled:file"), "{info}");
    assert!(info.lines().any(|l| l.starts_with("needs directory:") && l.trim_end().ends_with("true")), "{info}");

    let json = stdout_of(&sluice(&["plugin", "info", "--json", "file"]), "sluice plugin info --json file");
    let value: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("bad JSON ({e}): {json}"));
    assert_eq!(value["name"], "file");
    assert_eq!(value["capabilities"]["multipart_upload"], true);

    let dir = tempfile::tempdir().unwrap();
    let exported = dir.path().join("plugins");
    stdout_of(&sluice(&["plugin", "export", exported.to_str().unwrap()]), "sluice plugin export DIR");
    let file_wasm = exported.join("file.wasm");
    for name in ["file.wasm", "s3.wasm"] {
        let len = std::fs::metadata(exported.join(name)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "export wrote no usable {name} ({len} bytes)");
    }
    assert!(std::fs::read(&file_wasm).unwrap().starts_with(b"\0asm"), "file.wasm is not WebAssembly");

    let info = stdout_of(&sluice(&["plugin", "info", file_wasm.to_str().unwrap()]), "sluice plugin info DIR/file.wasm");
    assert!(info.lines().any(|l| l.starts_with("name:") && l.trim_end().ends_with(" file")), "{info}");
    assert!(info.contains(&file_wasm.display().to_string()), "source should be the exported path:\n{info}");

    let s3 = stdout_of(
        &sluice(&["plugin", "info", exported.join("s3.wasm").to_str().unwrap()]),
        "sluice plugin info DIR/s3.wasm",
    );
    assert!(s3.lines().any(|l| l.starts_with("name:") && l.trim_end().ends_with(" s3")), "{s3}");

    let url = format!("file://{}", dir.path().join("replica").display());
    let out = sluice(&["plugin", "check", "--plugin", file_wasm.to_str().unwrap(), &url]);
    let stdout = stdout_of(&out, "sluice plugin check --plugin DIR/file.wasm URL");
    assert_check_passed(&stdout);
}

#[test]
fn plugin_info_reads_a_third_party_plugin() {
    let wasm = hostile_wasm();
    let info = stdout_of(&sluice(&["plugin", "info", wasm.to_str().unwrap()]), "sluice plugin info hostile.wasm");
    assert!(info.lines().any(|l| l.starts_with("name:") && l.trim_end().ends_with(" hostile")), "{info}");
}

/// A store that keeps objects in the plugin instance's own memory works
/// call by call, and the conformance suite fails it on exactly the case
/// that shows it: objects written by one instance, read by a new one.
#[test]
fn the_suite_fails_a_plugin_that_keeps_objects_in_its_own_memory() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("replica").display());
    let wasm = hostile_wasm().to_str().unwrap();
    let out = sluice(&["plugin", "check", "--plugin", wasm, "-s", "mode=forgetful", &url]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "a forgetful store passed:\n{stdout}");
    let fails: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert_eq!(fails.len(), 1, "{stdout}");
    assert!(fails[0].contains("objects outlive the plugin instance"), "{stdout}");
    assert!(stdout.contains("PASS  put then get returns the same bytes"), "{stdout}");
}

/// A crash fails its own case, and the next case starts on a fresh
/// instance instead of failing on the poisoned one.
#[test]
fn a_crash_fails_its_case_and_the_next_starts_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("replica").display());
    let wasm = hostile_wasm().to_str().unwrap();
    let out = sluice(&["plugin", "check", "--plugin", wasm, "-s", "mode=panic", &url]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{stdout}");
    let put = stdout.lines().find(|l| l.contains("put then get returns the same bytes")).unwrap_or_default();
    assert!(put.starts_with("FAIL ") && put.contains("crashed"), "{stdout}");
    assert!(stdout.contains("PASS  get and head of a missing key are not-found"), "{stdout}");
    assert!(!stdout.contains("session is unusable"), "a case ran on the crashed instance:\n{stdout}");
}

// ---------------------------------------------------------------------------
// Hostile plugin: each limit obeyed, then violated
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_is_stopped_at_the_limit() {
    let _x = exclusive().await;
    let fx = fixture().await;
    let sandbox = SandboxConfig { memory_mib: Some(64), ..Default::default() };
    let store = fx.hostile("memory", &[("mode", "memory"), ("mib", "16")], sandbox);
    let neighbour = fx.neighbour();

    // Obeyed: 16 MiB under a 64 MiB limit.
    let meta = hostile_put(&store, &[]).await.unwrap_or_else(|e| panic!("16 MiB within 64 MiB: {e}"));
    assert_eq!(meta_value(&meta, "allocated-mib"), Some("16"));

    // Violated: 512 MiB.
    let (result, n) =
        alongside(&neighbour, hostile_put(&store, &[("mib", "512"), ("delay-ms", VIOLATION_DELAY_MS)])).await;
    let err = result.expect_err("a 512 MiB allocation under a 64 MiB limit must fail");
    assert!(matches!(err.kind, ErrorKind::MemoryLimit { limit_mib: 64 }), "expected MemoryLimit, got {err:?}");
    assert_names_everyone(&err, "memory");
    assert!(err.to_string().contains("64 MiB"), "{err}");
    assert!(!err.is_retryable());
    assert_neighbour_kept_working(&n, "memory bomb");

    // A fresh session of the same plugin works again.
    let meta = hostile_put(&store, &[("mib", "8")]).await.unwrap_or_else(|e| panic!("after the bomb: {e}"));
    assert_eq!(meta_value(&meta, "allocated-mib"), Some("8"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_is_stopped_by_the_cpu_budget() {
    let _x = exclusive().await;
    let fx = fixture().await;
    let sandbox = SandboxConfig { cpu_ms: Some(300), ..Default::default() };
    let store = fx.hostile("spin", &[("mode", "spin"), ("ms", "20")], sandbox);
    let neighbour = fx.neighbour();

    // Obeyed: 20 ms of work under a 300 ms budget.
    let meta = hostile_put(&store, &[]).await.unwrap_or_else(|e| panic!("20 ms spin within 300 ms: {e}"));
    let spun: u64 = meta_value(&meta, "spun-ms").unwrap().parse().unwrap();
    assert!(spun >= 20, "spun only {spun} ms");

    // Violated: an endless loop that never calls the host.
    let (result, n) = alongside(&neighbour, hostile_put(&store, &[("ms", "forever")])).await;
    let err = result.expect_err("an endless loop must be stopped");
    assert!(matches!(err.kind, ErrorKind::CpuLimit { budget_ms: 300 }), "expected CpuLimit, got {err:?}");
    assert_names_everyone(&err, "spin");
    assert!(n.hostile_elapsed < Duration::from_secs(5), "the endless loop ran for {:?}", n.hostile_elapsed);
    assert!(n.hostile_elapsed >= Duration::from_millis(250), "stopped before its budget: {:?}", n.hostile_elapsed);
    assert_neighbour_kept_working(&n, "endless loop");

    // A session that trapped is unusable; a fresh one works.
    let mut session = store.session().await.unwrap();
    let err = session.put("probe/object", b"", &params(&[("ms", "forever")])).await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::CpuLimit { .. }), "{err:?}");
    assert!(session.is_poisoned());
    let again = session.put("probe/object", b"", &params(&[])).await.unwrap_err();
    assert!(matches!(again.kind, ErrorKind::Poisoned), "{again:?}");
    hostile_put(&store, &[("ms", "5")]).await.unwrap_or_else(|e| panic!("after the loop: {e}"));
}

/// A one-thread HTTP server on 127.0.0.1 answering 200 to everything and
/// recording each request line and Host header.
struct TinyServer {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl TinyServer {
    fn start() -> TinyServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if head.is_empty() || line.to_ascii_lowercase().starts_with("host:") {
                        head.push_str(line.trim_end());
                        head.push(' ');
                    }
                }
                record.lock().unwrap().push(head);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello");
            }
        });
        TinyServer { port, seen }
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_outside_the_allowlist_are_refused() {
    let _x = exclusive().await;
    let server = TinyServer::start();
    let port = server.port;
    let fx = fixture().await;
    let sandbox = SandboxConfig { allow_hosts: Some(vec!["127.0.0.1".into()]), ..Default::default() };
    let allowed_url = format!("http://127.0.0.1:{port}/allowed");
    let store = fx.hostile("http", &[("mode", "http"), ("url", &allowed_url)], sandbox);
    let neighbour = fx.neighbour();

    // Obeyed: a host on the allowlist.
    let meta = hostile_put(&store, &[]).await.unwrap_or_else(|e| panic!("GET to an allowed host: {e}"));
    assert_eq!(meta_value(&meta, "status"), Some("200"));
    assert_eq!(meta_value(&meta, "body-len"), Some("5"));
    assert_eq!(server.requests().len(), 1, "{:?}", server.requests());
    assert!(server.requests()[0].starts_with("GET /allowed "), "{:?}", server.requests());

    // Violated: the same server under another name, and another address.
    for (host, path) in [("localhost", "forbidden-name"), ("127.0.0.2", "forbidden-address")] {
        let url = format!("http://{host}:{port}/{path}");
        let (result, n) =
            alongside(&neighbour, hostile_put(&store, &[("url", &url), ("delay-ms", VIOLATION_DELAY_MS)])).await;
        let err = result.expect_err("a request outside the allowlist must fail");
        match &err.kind {
            ErrorKind::Storage(StorageError::AccessDenied(msg)) => {
                assert!(msg.contains(host), "the refusal does not name {host}: {msg}")
            }
            other => panic!("expected AccessDenied for {host}, got {other:?}"),
        }
        assert!(!err.is_retryable());
        assert_names_everyone(&err, "http");
        assert_neighbour_kept_working(&n, &format!("request to {host}"));
    }
    let seen = server.requests();
    assert!(!seen.iter().any(|r| r.contains("forbidden")), "the server received a refused request: {seen:?}");
    assert_eq!(seen.len(), 1, "{seen:?}");

    // Still works afterwards.
    let meta = hostile_put(&store, &[]).await.unwrap_or_else(|e| panic!("after the refusals: {e}"));
    assert_eq!(meta_value(&meta, "status"), Some("200"));
    assert_eq!(server.requests().len(), 2);
}

/// A TCP server on 127.0.0.1 answering each connection's first line with
/// `pong`; its port and how many connections it has accepted.
fn pong_server() -> (u16, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(Mutex::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            *count.lock().unwrap() += 1;
            let mut line = String::new();
            let _ = BufReader::new(&stream).read_line(&mut line);
            let _ = stream.write_all(b"pong\n");
        }
    });
    (port, accepted)
}

/// TCP for a plugin declaring `needs-sockets`, as an obeyed/violated pair:
/// it reaches the `host:port` its replica's `allow-hosts` grants, and
/// neither another port of the same host nor anything at all without a
/// grant (a file URL implies none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_reach_only_the_granted_host_and_port() {
    let ((allowed, allowed_seen), (other, other_seen)) = (pong_server(), pong_server());
    let fx = fixture().await;
    let grant = SandboxConfig { allow_hosts: Some(vec![format!("127.0.0.1:{allowed}")]), ..Default::default() };
    let store = fx.hostile("tcp", &[("mode", "tcp"), ("addr", &format!("127.0.0.1:{allowed}"))], grant);
    let meta = hostile_put(&store, &[]).await.unwrap_or_else(|e| panic!("connect to the granted port: {e}"));
    assert_eq!(meta_value(&meta, "reply"), Some("pong"));
    assert_eq!(*allowed_seen.lock().unwrap(), 1);

    let elsewhere = format!("127.0.0.1:{other}");
    let err = hostile_put(&store, &[("addr", &elsewhere)]).await.expect_err("another port must be refused");
    assert_names_everyone(&err, "tcp");
    let ungranted =
        fx.hostile("tcp-none", &[("mode", "tcp"), ("addr", &format!("127.0.0.1:{allowed}"))], SandboxConfig::default());
    hostile_put(&ungranted, &[]).await.expect_err("no grant, no connection");
    assert_eq!(
        (*allowed_seen.lock().unwrap(), *other_seen.lock().unwrap()),
        (1, 0),
        "a refused connection got through"
    );
}

/// Seconds the plugin requests of database `name` waited for its request
/// rate (`sluice_plugin_throttled_seconds_total`).
fn throttled_seconds(name: &str) -> f64 {
    use prometheus::core::Collector;
    let db = database_label(name);
    let families = sluice::metrics::PLUGIN_THROTTLED_SECONDS.collect();
    let metrics = families.iter().flat_map(|f| f.get_metric());
    let of_db = metrics.filter(|m| m.get_label().iter().any(|l| l.name() == "db" && l.value() == db));
    of_db.map(|m| m.get_counter().get_value()).sum()
}

/// A tenant's request rate, as an obeyed/violated pair: a second's worth
/// of requests goes at once, more wait (slower, never failed), and another
/// tenant on the same plugin and server is not held back by that budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_a_tenants_rate_wait_and_its_neighbours_do_not() {
    let _x = exclusive().await;
    let server = TinyServer::start();
    let fx = fixture().await;
    let url = format!("http://127.0.0.1:{}/paced", server.port);
    let allow = Some(vec!["127.0.0.1".to_string()]);
    let limited =
        SandboxConfig { allow_hosts: allow.clone(), requests_per_second: NonZeroU32::new(4), ..Default::default() };
    let store = fx.hostile("paced", &[("mode", "http"), ("url", &url)], limited);
    let other = fx.hostile(
        "unpaced",
        &[("mode", "http"), ("url", &url)],
        SandboxConfig { allow_hosts: allow, ..Default::default() },
    );

    // Obeyed: a second's worth (4) goes without waiting.
    let start = Instant::now();
    for i in 0..4 {
        hostile_put(&store, &[]).await.unwrap_or_else(|e| panic!("request {i} within the rate: {e}"));
    }
    assert_eq!(throttled_seconds("paced"), 0.0, "requests within the burst waited");

    // Violated: 8 more at 4 a second cannot end before 2 s from the
    // start (a lower bound: a slow machine is later, never earlier), while
    // the other tenant's 12 requests meanwhile wait for nothing.
    let paced = async {
        for i in 0..8 {
            hostile_put(&store, &[]).await.unwrap_or_else(|e| panic!("request {i} past the rate failed: {e}"));
        }
        start.elapsed()
    };
    let unpaced = async {
        for i in 0..12 {
            hostile_put(&other, &[]).await.unwrap_or_else(|e| panic!("the other tenant's request {i}: {e}"));
        }
    };
    let (elapsed, ()) = tokio::join!(paced, unpaced);
    assert!(elapsed >= Duration::from_millis(1900), "12 requests at 4/s took only {elapsed:?}");
    // (How long the waits add up to depends on how long each put took.)
    let waited = throttled_seconds("paced");
    assert!(waited > 0.0, "the paced tenant never waited");
    assert_eq!(throttled_seconds("unpaced"), 0.0, "the other tenant waited for a budget it does not have");
    assert_eq!(server.requests().len(), 24, "every request reached the server once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_outside_the_granted_directory_are_unreachable() {
    let _x = exclusive().await;
    let fx = fixture().await;
    let granted = fx.replica_dir("file");
    std::fs::create_dir_all(&granted).unwrap();
    let inside = granted.join("inside.txt");
    std::fs::write(&inside, "inside-content-ok").unwrap();
    let secret = format!("TOP-SECRET-{}", std::process::id());
    let secret_path = fx.dir.path().join("secret.txt");
    std::fs::write(&secret_path, &secret).unwrap();
    std::os::unix::fs::symlink(&secret_path, granted.join("link-to-secret")).unwrap();

    let store = fx.hostile("file", &[("mode", "file"), ("path", inside.to_str().unwrap())], SandboxConfig::default());
    let neighbour = fx.neighbour();

    // Obeyed: a file inside the granted directory.
    let meta = hostile_put(&store, &[]).await.unwrap_or_else(|e| panic!("reading inside the grant: {e}"));
    assert_eq!(meta_value(&meta, "content"), Some("inside-content-ok"));
    let bytes = store.session().await.unwrap().get("any", None).await.unwrap();
    assert_eq!(bytes, b"inside-content-ok");

    // Violated: outside, by absolute path, by `..`, and through a symlink.
    let escapes = [
        "/etc/passwd".to_string(),
        secret_path.display().to_string(),
        format!("{}/../secret.txt", granted.display()),
        granted.join("link-to-secret").display().to_string(),
    ];
    for path in &escapes {
        let (result, n) =
            alongside(&neighbour, hostile_put(&store, &[("path", path), ("delay-ms", VIOLATION_DELAY_MS)])).await;
        let err = match result {
            Ok(meta) => panic!("reading {path} outside the grant succeeded: {meta:?}"),
            Err(e) => e,
        };
        assert!(matches!(err.kind, ErrorKind::Storage(_)), "reading {path}: expected a storage error, got {err:?}");
        assert_names_everyone(&err, "file");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(&secret) && !shown.contains("root:"), "{path}: secret leaked into {shown}");
        assert_neighbour_kept_working(&n, &format!("reading {path}"));

        // The same through `get`, which would return the bytes themselves.
        let other = fx.hostile("file", &[("mode", "file"), ("path", path)], SandboxConfig::default());
        match other.session().await.unwrap().get("any", None).await {
            Ok(bytes) => panic!("get of {path} returned {} bytes: {:?}", bytes.len(), String::from_utf8_lossy(&bytes)),
            Err(e) => assert!(!e.to_string().contains(&secret), "{e}"),
        }
    }

    // Still works afterwards.
    let meta = hostile_put(&store, &[]).await.unwrap_or_else(|e| panic!("after the escapes: {e}"));
    assert_eq!(meta_value(&meta, "len"), Some("17"));
}

/// The file called `name` under `dir`, at any depth.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir).ok()?.filter_map(Result::ok).find_map(|e| match e.file_type().ok()?.is_dir() {
        true => find_file(&e.path(), name),
        false => (e.file_name() == name).then(|| e.path()),
    })
}

/// Tenants in one process (issue 17): tenant A's plugin learns nothing of
/// tenant B: not B's objects (B's replica directory is outside A's grant),
/// not B's settings (its credentials), not the process's environment
/// (where B's credentials could come from).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_plugin_reaches_nothing_of_another_tenant() {
    let _x = exclusive().await;
    let fx = fixture().await;
    let secret = format!("TENANT-B-SECRET-{}", std::process::id());
    let b = fx.store(&fx.file, "tenant-b", &[("secret-access-key", &secret)], SandboxConfig::default());
    let mut session = b.session().await.unwrap();
    session.put("0000/b-object", secret.as_bytes(), &params(&[])).await.unwrap();
    let b_object = find_file(&fx.replica_dir("tenant-b"), "b-object")
        .expect("tenant B's object is a file in its replica directory");
    assert_eq!(std::fs::read(&b_object).unwrap(), secret.as_bytes());
    std::fs::create_dir_all(fx.replica_dir("tenant-a")).unwrap();

    // What A's plugin sees of its surroundings: its own settings only.
    let given = [("mode", "snoop"), ("access-key-id", "A-KEY"), ("secret-access-key", "UNDECLARED")];
    let a = fx.hostile("tenant-a", &given, SandboxConfig::default());
    let seen = hostile_put(&a, &[]).await.unwrap_or_else(|e| panic!("snooping: {e}"));
    assert!(std::env::vars().count() > 0, "the test process has an environment to leak");
    assert_eq!(meta_value(&seen, "env"), Some(""), "the process environment reached a plugin");
    let settings = meta_value(&seen, "settings").unwrap();
    assert!(settings.contains("access-key-id=A-KEY"), "A's own settings: {settings}");
    assert!(!settings.contains("UNDECLARED"), "a setting the plugin does not declare reached it: {settings}");
    assert!(!format!("{seen:?}").contains(&secret), "tenant B's secret reached tenant A: {seen:?}");
    let root = meta_value(&seen, "root").unwrap();
    assert!(!root.contains("tenant-b"), "tenant B's directory is visible to A: {root}");

    // B's object, by absolute path, relative to A's grant, and by `get`.
    let a_dir = fx.replica_dir("tenant-a");
    let paths = [b_object.display().to_string(), format!("{}/../replica-tenant-b/0000/b-object", a_dir.display())];
    for path in &paths {
        let read = hostile_put(&a, &[("mode", "file"), ("path", path)]).await;
        let err = read.expect_err(&format!("tenant A read tenant B's object at {path}"));
        assert!(!format!("{err} {err:?}").contains(&secret), "{path}: B's data leaked into {err}");
        let other = fx.hostile("tenant-a", &[("mode", "file"), ("path", path)], SandboxConfig::default());
        match other.session().await.unwrap().get("any", None).await {
            Ok(bytes) => panic!("tenant A's get of {path} returned {:?}", String::from_utf8_lossy(&bytes)),
            Err(e) => assert!(!e.to_string().contains(&secret), "{e}"),
        }
    }
    // B is unaffected.
    assert_eq!(session.get("0000/b-object", None).await.unwrap(), secret.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_becomes_a_trap_with_the_message() {
    let _x = exclusive().await;
    let fx = fixture().await;
    let marker = "HOSTILE-PANIC-MARKER-3141";
    let store = fx.hostile("panic", &[("mode", "panic"), ("message", marker)], SandboxConfig::default());
    let neighbour = fx.neighbour();

    // Obeyed: no panic.
    let meta = hostile_put(&store, &[("panic", "no")]).await.unwrap_or_else(|e| panic!("without a panic: {e}"));
    assert_eq!(meta_value(&meta, "panicked"), Some("no"));

    // Violated.
    let (result, n) = alongside(&neighbour, hostile_put(&store, &[("delay-ms", VIOLATION_DELAY_MS)])).await;
    let err = result.expect_err("a panic must fail the call");
    match &err.kind {
        ErrorKind::Trap { trap, stderr } => {
            assert!(stderr.contains(marker), "stderr capture lacks the panic message: trap {trap:?}, stderr {stderr:?}")
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert!(err.to_string().contains(marker), "{err}");
    assert_names_everyone(&err, "panic");
    assert_neighbour_kept_working(&n, "panic");

    // A fresh session works again.
    hostile_put(&store, &[("panic", "no")]).await.unwrap_or_else(|e| panic!("after the panic: {e}"));
}

// ---------------------------------------------------------------------------
// Idle stores cost nothing
// ---------------------------------------------------------------------------

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

#[tokio::test]
async fn a_thousand_idle_stores_hold_no_instances() {
    let _x = exclusive().await;
    let fx = fixture().await;
    // Warm up: one session, so lazily initialised machinery is counted before.
    let warm = fx.hostile("idle-warmup", &[("mode", "noop")], SandboxConfig::default());
    hostile_put(&warm, &[]).await.unwrap();

    let before = vm_rss_kib();
    let stores: Vec<PluginStore> =
        (0..1000).map(|i| fx.hostile(&format!("idle-{i}"), &[("mode", "noop")], SandboxConfig::default())).collect();
    let grown_mib = vm_rss_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 50, "1000 idle stores grew the resident set by {grown_mib} MiB");

    // Structural: instances are limited process-wide to MAX_LIVE_INSTANCES,
    // and the 1000 stores hold none of those slots: that many sessions can
    // still be opened at once, and only then does the next one wait.
    let mut live = Vec::with_capacity(MAX_LIVE_INSTANCES);
    for store in &stores[..MAX_LIVE_INSTANCES] {
        let session = tokio::time::timeout(Duration::from_secs(30), store.session())
            .await
            .expect("a session waited for a slot: some idle store is holding an instance")
            .unwrap();
        live.push(session);
    }
    let next = &stores[MAX_LIVE_INSTANCES];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), next.session()).await.is_err(),
        "more than MAX_LIVE_INSTANCES instances were alive at once"
    );
    drop(live.pop());
    let mut session = tokio::time::timeout(Duration::from_secs(30), next.session())
        .await
        .expect("a freed slot was not reused")
        .unwrap();
    session.put("probe/object", b"x", &params(&[])).await.unwrap();
    drop(session);
    drop(live);

    // And every idle store still works, one short session at a time.
    for store in stores.iter().step_by(97) {
        hostile_put(store, &[]).await.unwrap();
    }
}

/// A busy store's small-io session is parked warm between uses, holding
/// memory but no live slot, and freed once idle for `WARM_IDLE`.
#[tokio::test]
async fn warm_sessions_hold_no_live_slot_and_expire() {
    let _x = exclusive().await;
    let fx = fixture().await;
    let busy = fx.hostile("warm-busy", &[("mode", "noop")], SandboxConfig::default());
    let mut session = busy.small_io_session().await.unwrap();
    session.put("warm/a", b"x", &params(&[])).await.unwrap();
    busy.recycle(session);
    assert!(busy.holds_warm_instance(), "a healthy small-io session is kept");
    // Every live slot can still be taken by other stores.
    let others: Vec<PluginStore> = (0..MAX_LIVE_INSTANCES)
        .map(|i| fx.hostile(&format!("warm-other-{i}"), &[("mode", "noop")], SandboxConfig::default()))
        .collect();
    let mut live = Vec::new();
    for store in &others {
        live.push(
            tokio::time::timeout(Duration::from_secs(30), store.session())
                .await
                .expect("the warm instance holds a live slot")
                .unwrap(),
        );
    }
    // With no live slot free, the warm instance gives way and its store
    // waits like any other.
    assert!(tokio::time::timeout(Duration::from_millis(300), busy.small_io_session()).await.is_err());
    assert!(!busy.holds_warm_instance(), "the warm instance was not given up");
    drop(live);
    // Reused while warm: the next session is the parked one.
    let mut session = busy.small_io_session().await.unwrap();
    session.put("warm/b", b"y", &params(&[])).await.unwrap();
    busy.recycle(session);
    let session = busy.small_io_session().await.unwrap();
    assert!(!busy.holds_warm_instance(), "the parked instance was taken");
    busy.recycle(session);
    // Idle past WARM_IDLE: freed.
    busy.expire_warm();
    assert!(busy.holds_warm_instance(), "expired too early");
    tokio::time::sleep(WARM_IDLE + Duration::from_millis(100)).await;
    busy.expire_warm();
    assert!(!busy.holds_warm_instance(), "an idle store kept its warm instance");
    // A poisoned instance is never parked.
    let bomb = fx.hostile("warm-bomb", &[("mode", "panic")], SandboxConfig::default());
    let mut session = bomb.small_io_session().await.unwrap();
    assert!(session.put("warm/c", b"z", &params(&[])).await.is_err());
    bomb.recycle(session);
    assert!(!bomb.holds_warm_instance(), "a trapped instance was parked");
}

/// A plugin may write to stderr freely: only the tail is kept to explain a
/// crash (the panic message, which comes last).
#[tokio::test]
async fn chatty_plugin_keeps_working_and_panic_tail_is_kept() {
    let _x = exclusive().await;
    let fx = fixture().await;
    let marker = "HOSTILE-PANIC-AFTER-CHATTER";
    let store =
        fx.hostile("chatty", &[("mode", "panic"), ("message", marker), ("stderr-kib", "40")], SandboxConfig::default());
    hostile_put(&store, &[("panic", "no")])
        .await
        .unwrap_or_else(|e| panic!("40 KiB of stderr crashed the plugin: {e}"));
    let err = hostile_put(&store, &[]).await.expect_err("panics");
    match &err.kind {
        ErrorKind::Trap { stderr, .. } => {
            assert!(stderr.contains(marker), "panic message lost after chatter: {stderr:?}")
        }
        other => panic!("expected a trap, got {other:?}"),
    }
}

/// A plugin that handles a refused allocation itself did not crash, so a
/// later, unrelated panic in the same session must be reported as a trap,
/// not as the memory limit.
#[tokio::test]
async fn handled_allocation_failure_does_not_taint_later_traps() {
    let _x = exclusive().await;
    let fx = fixture().await;
    let sandbox = SandboxConfig { memory_mib: Some(64), ..Default::default() };
    let store = fx.hostile("graceful", &[("mode", "memory"), ("mib", "1"), ("message", "LATER-PANIC")], sandbox);
    let mut session = store.session().await.unwrap();
    let err =
        session.put("k", b"", &params(&[("mib", "512"), ("graceful", "yes")])).await.expect_err("512 MiB is refused");
    assert!(matches!(err.kind, ErrorKind::Storage(StorageError::Permanent(_))), "{err:?}");
    let err = session.put("k", b"", &params(&[("mode", "panic")])).await.expect_err("panics");
    assert!(matches!(err.kind, ErrorKind::Trap { .. }), "a panic reported as {:?}", err.kind);
}
