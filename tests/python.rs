//! The Python example plugin (plugins/python-webdav): built with
//! componentize-py against the contract's `http-plugin` world, it passes
//! the conformance suite on a real WebDAV server (wsgidav), holds a
//! replica that `sluice replicate` writes while this process changes the
//! database and that `sluice restore` reads back page for page, and a wrong
//! password stops the suite with one clear message.
//!
//! Needs `python3` and componentize-py (on PATH, else installed from PyPI
//! under target/componentize-py on first use), and wsgidav (see
//! tests/common/webdav.rs).

mod common;

use common::webdav::{PASSWORD, USER, WebDav};
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

const PAGE: u32 = 4096;
/// What CI installs; a componentize-py on PATH is used as it is.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn python3_works() -> bool {
    Command::new("python3").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// componentize-py from PATH, else installed from PyPI under
/// target/componentize-py. `pip install --target` puts its script in
/// `bin/`, where it cannot import its own package: it runs under
/// `python3` with PYTHONPATH set to the install.
fn componentize_py() -> Command {
    if Command::new("componentize-py").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Command::new("componentize-py");
    }
    assert!(
        python3_works(),
        "the Python plugin's test needs python3 (with pip) and componentize-py: install Python 3, then \
         `pip install {COMPONENTIZE_PY}`"
    );
    let script = pip_target("componentize-py", &[COMPONENTIZE_PY], "bin/componentize-py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script).env("PYTHONPATH", script.parent().and_then(Path::parent).expect("target/componentize-py"));
    cmd
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The plugin's Python modules (not its tests).
fn plugin_modules(src: &Path) -> Vec<PathBuf> {
    let mut modules: Vec<PathBuf> = std::fs::read_dir(src)
        .unwrap_or_else(|e| panic!("{}: {e}", src.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "py"))
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with("test_"))
        .collect();
    modules.sort();
    assert!(modules.iter().any(|p| p.ends_with("app.py")), "no app.py in {}", src.display());
    modules
}

/// The component, built once per run, and again only when a module or
/// the contract is newer than it. Also runs the pure modules' unit tests
/// natively and compiles the component into the tests' shared cache once,
/// so the tests running side by side do not each compile it.
fn python_wasm() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        let src = repo().join("plugins/python-webdav");
        let out = repo().join("target/python-webdav");
        let wasm = out.join("python_webdav.wasm");
        let wit = repo().join("wit");

        assert!(python3_works(), "the Python plugin's unit tests need python3 on PATH");
        let unit = Command::new("python3").args(["-B", "-m", "unittest", "-q", "test_pure"]).current_dir(&src).output();
        let unit = unit.expect("run python3 -m unittest");
        assert!(unit.status.success(), "the Python plugin's unit tests failed:\n{}", text(&unit));

        let modules = plugin_modules(&src);
        let newest = modules.iter().chain([&wit.join("storage.wit")]).filter_map(|p| modified(p)).max();
        if modified(&wasm).is_none_or(|built| newest.is_some_and(|n| n > built)) {
            // componentize-py writes __pycache__ into the folders it reads:
            // it reads a copy, so the source tree stays clean.
            let stage = out.join("src");
            let _ = std::fs::remove_dir_all(&stage);
            std::fs::create_dir_all(&stage).unwrap();
            for m in &modules {
                std::fs::copy(m, stage.join(m.file_name().unwrap())).unwrap();
            }
            let part = out.join("python_webdav.wasm.part");
            let started = Instant::now();
            let built = componentize_py()
                .arg("-d")
                .arg(&wit)
                .args(["-w", "http-plugin", "componentize", "-p"])
                .arg(&stage)
                .arg("-o")
                .arg(&part)
                .arg("app")
                .current_dir(&stage)
                .output()
                .expect("run componentize-py");
            assert!(built.status.success(), "componentize-py could not build the plugin:\n{}", text(&built));
            std::fs::rename(&part, &wasm).unwrap();
            eprintln!(
                "built {} ({} bytes) in {:.1?}",
                wasm.display(),
                std::fs::metadata(&wasm).unwrap().len(),
                started.elapsed()
            );
        }

        let started = Instant::now();
        let info = run_ok(sluice().args(["plugin", "info", "--json"]).arg(&wasm));
        eprintln!("sluice plugin info (compiling it into the cache if needed) took {:.1?}", started.elapsed());
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(info["name"], "python-webdav", "{info:#}");
        let settings: Vec<(&str, bool)> = info["settings"]
            .as_array()
            .unwrap_or_else(|| panic!("no settings declared: {info:#}"))
            .iter()
            .map(|s| (s["name"].as_str().unwrap(), s["secret"].as_bool().unwrap()))
            .collect();
        assert_eq!(settings, [("webdav-url", false), ("webdav-username", false), ("webdav-password", true)]);
        let caps = &info["capabilities"];
        let declared = |c: &str| caps[c].as_bool();
        assert_eq!((declared("conditional_writes"), declared("multipart_upload")), (Some(false), Some(false)));
        wasm
    })
}

/// `-s` for the server's user and password.
fn credentials(password: &str) -> [String; 4] {
    ["-s".into(), format!("webdav-username={USER}"), "-s".into(), format!("webdav-password={password}")]
}

#[test]
fn the_conformance_suite_passes() {
    let wasm = python_wasm();
    let dav = WebDav::start();
    let url = format!("webdav://127.0.0.1:{}/check", dav.port);
    let started = Instant::now();
    let out = run_ok(sluice().args(["plugin", "check", "--plugin"]).arg(wasm).args(credentials(PASSWORD)).arg(&url));
    eprintln!("sluice plugin check took {:.1?}", started.elapsed());
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(stdout.contains("checking plugin `python-webdav`"), "{stdout}");
    let summary = stdout.lines().find(|l| l.contains(" passed, ")).expect("a summary line");
    assert!(summary.contains(" 0 failed"), "{stdout}");
    assert!(!stdout.lines().any(|l| l.starts_with("FAIL ")), "{stdout}");
    // What it does not do is declared, refused and skipped, not failed.
    for case in ["put if-absent", "put if-match", "large object in parts", "aborted upload leaves nothing"] {
        assert!(stdout.lines().any(|l| l.starts_with("SKIP") && l.contains(case)), "{case}:\n{stdout}");
    }
    // Ranged reads and metadata it does, so they ran.
    for case in ["ranged reads", "head reports size, etag and metadata"] {
        assert!(stdout.lines().any(|l| l.starts_with("PASS") && l.contains(case)), "{case}:\n{stdout}");
    }
    // The suite cleaned up after itself: no file is left on the server.
    let left = walk(&dav.root.path().join("data/check"));
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn replicates_and_restores_a_database() {
    let wasm = python_wasm();
    let dav = WebDav::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, PAGE);
    let body = format!(
        "dbs:\n  - path: {}\n    replicas:\n      - url: webdav://127.0.0.1:{}/backups/app\n        plugin: {}\n        webdav-username: {USER}\n        webdav-password: {PASSWORD}\n",
        db.display(),
        dav.port,
        wasm.display()
    );
    let started = Instant::now();
    let (child, socket) = start_with_socket(dir.path(), &body);
    let mut rng = seeded(41);
    let points = synced_points(&conn, &db, &socket, &mut rng, 4);
    let log = stop(child);
    eprintln!("replicated {} synced batches in {:.1?}", points.len(), started.elapsed());
    // The Python plugin wrote the replica (it logs the collections it
    // creates; the bundled WebDAV plugin, which serves the same scheme,
    // does not), as files in the replica's own collection.
    assert!(log.contains("created collection"), "the log shows no request by the Python plugin:\n{log}");
    assert!(!walk(&dav.root.path().join("data/backups/app")).is_empty());
    assert!(!log.contains(PASSWORD), "the log shows the password:\n{log}");

    // Restored through the configuration, and so through the Python
    // plugin: the newest state, then the first synced one.
    let config = dir.path().join("sluice.yml");
    let restored = dir.path().join("restored.db");
    let restore = |txid: Option<u64>| {
        let _ = std::fs::remove_file(&restored);
        let mut cmd = sluice();
        cmd.args(["restore", "-config"]).arg(&config).arg("-o").arg(&restored);
        if let Some(t) = txid {
            cmd.args(["-txid", &format!("{t:016x}")]);
        }
        run_ok(cmd.arg(&db));
        file_image(&restored, PAGE)
    };
    let started = Instant::now();
    assert_same_image(&image(&conn), &restore(None), "the newest state");
    eprintln!("restore took {:.1?}", started.elapsed());
    let (txid, want) = &points[0];
    assert_same_image(want, &restore(Some(*txid)), &format!("TXID {txid}"));
}

#[test]
fn a_wrong_password_says_so_once() {
    const WRONG: &str = "not-the-password-7f3a";
    let wasm = python_wasm();
    let dav = WebDav::start();
    let url = format!("webdav://127.0.0.1:{}/check", dav.port);
    let out = sluice().args(["plugin", "check", "--plugin"]).arg(wasm).args(credentials(WRONG)).arg(&url).output();
    let out = out.unwrap();
    let all = text(&out);
    assert!(!out.status.success(), "a wrong password passed:\n{all}");
    // Said once, as the credentials' fault, not as a failure of every case.
    let fails: Vec<&str> = all.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert_eq!(fails.len(), 1, "{all}");
    assert!(fails[0].contains("credentials") && fails[0].contains("HTTP 401"), "{all}");
    // On one line: the server's HTML error page is cut down to its title.
    assert!(fails[0].trim_end().ends_with("run again") && !all.contains("<html"), "{all}");
    assert!(!all.contains(WRONG), "the password is in the output:\n{all}");
}
