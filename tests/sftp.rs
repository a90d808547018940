//! The bundled SFTP plugin against a real OpenSSH server (Debian's
//! openssh-server, started by the test on 127.0.0.1): the conformance
//! suite with a key and a checked host key; replication while this
//! process writes, restored at every TXID a `sync -wait` reported and
//! compared page for page, logged in with a password; Litestream's
//! expanded config form with `key-path` and `host-key`; a server key that
//! is not `host-key`, a wrong password and an unauthorized key, each
//! refused once, saying what to do; and replicators killed mid-upload.

mod common;

use common::sshd::{PASSWORD, PASSWORD_USER, SlowLink, Sshd};
use common::*;
use std::process::Output;

const PAGE: u32 = 4096;

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn check_with_key(sshd: &Sshd, key: &std::path::Path, host_key: &str) -> Output {
    sluice()
        .args(["plugin", "check", "-s"])
        .arg(format!("key-path={}", key.display()))
        .args(["-s", &format!("host-key={host_key}")])
        .arg(sshd.key_url("check"))
        .output()
        .unwrap()
}

/// The only FAIL line of a `plugin check` that was refused at once.
fn one_failure(out: &Output) -> String {
    assert!(!out.status.success(), "{}", text(out));
    let all = text(out);
    let fails: Vec<&str> = all.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert_eq!(fails.len(), 1, "said once, not by every case:\n{all}");
    fails[0].to_string()
}

#[test]
fn the_conformance_suite_passes_with_a_key_and_a_checked_host_key() {
    let sshd = Sshd::start();
    let out = check_with_key(&sshd, &sshd.key_path(), &sshd.host_key());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\nsshd:\n{}", text(&out), sshd.log());
    assert!(stdout.contains("checking plugin `sftp`"), "{stdout}");
    let summary = stdout.lines().find(|l| l.contains(" passed, ")).expect("a summary line");
    assert!(summary.contains(" 0 failed"), "{stdout}");
    for case in ["ranged reads", "head reports size, etag and metadata", "objects outlive the plugin instance"] {
        assert!(stdout.lines().any(|l| l.starts_with("PASS") && l.contains(case)), "{case}:\n{stdout}");
    }
    // With the host key given, nothing warns that it is unchecked.
    assert!(!text(&out).contains("no host-key set"), "{}", text(&out));
}

#[test]
fn a_server_key_that_is_not_host_key_is_refused_naming_the_key_offered() {
    let sshd = Sshd::start();
    let fail = one_failure(&check_with_key(&sshd, &sshd.key_path(), &sshd.other_host_key()));
    assert!(fail.contains("host-key"), "{fail}");
    let offered = sshd.host_key();
    let offered_key = offered.split_whitespace().nth(1).unwrap();
    assert!(fail.contains(offered_key), "the key the server offered is named:\n{fail}");
    // The plugin stopped before logging in: no credential went to a
    // server it could not trust.
    assert!(walk(&sshd.files()).is_empty(), "{:?}", walk(&sshd.files()));
    assert!(!sshd.log().contains("Accepted"), "{}", sshd.log());
}

#[test]
fn wrong_credentials_are_refused_once_saying_what_to_check() {
    let sshd = Sshd::start();
    let fail = one_failure(&check_with_key(&sshd, &sshd.other_key_path(), &sshd.host_key()));
    assert!(fail.contains("refused the login") && fail.contains("key-path"), "{fail}");
    let wrong = sshd.password_url("check").replace(PASSWORD, "wrong-password");
    let out = sluice().args(["plugin", "check"]).arg(&wrong).output().unwrap();
    let fail = one_failure(&out);
    assert!(fail.contains("refused the login") && fail.contains("password"), "{fail}");
    let said = fail.split("access denied:").nth(1).expect("an access-denied error");
    assert!(!said.contains("wrong-password"), "the password is not repeated:\n{fail}");
    // The right password works against the same server.
    run_ok(sluice().args(["plugin", "check"]).arg(sshd.password_url("check")));
}

#[test]
fn replicates_and_restores_at_every_synced_txid_with_a_password() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, PAGE);
    let url = sshd.password_url("backups/app");
    let body = format!("dbs:\n  - path: {}\n    replica:\n      url: {url}\n", db.display());
    let (child, socket) = start_with_socket(dir.path(), &body);
    let mut rng = seeded(31);
    let points = synced_points(&conn, &db, &socket, &mut rng, 6);
    stop(child);
    // Segments are files on the server, one directory per level.
    let files = walk(&sshd.files());
    assert!(files.iter().any(|p| p.to_string_lossy().contains("backups/app/0000/")), "{files:?}");
    assert!(!files.iter().any(|p| p.to_string_lossy().contains(".sluice-tmp-")), "{files:?}");
    assert_eq!(replica_txid(&url), points.last().unwrap().0);
    for (txid, want) in &points {
        let got = restore_image(&url, &dir.path().join("restored.db"), Some(*txid), PAGE);
        assert_same_image(want, &got, &format!("TXID {txid}"));
    }
}

/// Litestream's SFTP replica as its users write it: `type: sftp` with
/// `host`, `user`, `path`, `key-path` and `host-key`; replicated and
/// restored through the same config file.
#[test]
fn litestreams_config_form_with_key_path_and_host_key() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, PAGE);
    workload(&conn, &mut seeded(32), 60);
    let config = dir.path().join("litestream.yml");
    let body = format!(
        "dbs:\n  - path: {db}\n    replicas:\n      - type: sftp\n        host: 127.0.0.1:{port}\n        user: {user}\n        path: {files}/ls\n        key-path: {key}\n        host-key: {host_key}\n",
        db = db.display(),
        port = sshd.port,
        user = common::sshd::user(),
        files = sshd.files().display(),
        key = sshd.key_path().display(),
        host_key = sshd.host_key(),
    );
    std::fs::write(&config, body).unwrap();
    let out = run_ok(sluice().args(["replicate", "-once", "-config"]).arg(&config));
    assert!(!text(&out).contains("no host-key set"), "{}", text(&out));
    assert!(walk(&sshd.files().join("ls")).iter().any(|p| p.to_string_lossy().ends_with(".seg")));
    let restored = dir.path().join("restored.db");
    run_ok(sluice().args(["restore", "-config"]).arg(&config).arg("-o").arg(&restored).arg(&db));
    assert_same_image(&image(&conn), &file_image(&restored, PAGE), "restored through the config");
}

/// Replicators killed (SIGKILL) while they upload, then restarted: every
/// restore afterwards is exact, and the temporary files the kills left
/// are collected by retention's deletes once they are old.
#[test]
fn replicators_killed_mid_upload_lose_nothing() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, PAGE);
    let url = sshd.password_url("killed/app");
    let body = format!("dbs:\n  - path: {}\n    replica:\n      url: {url}\n", db.display());
    let mut rng = seeded(33);
    conn.execute_batch("CREATE TABLE big(b BLOB)").unwrap();
    let temps = || -> std::collections::BTreeSet<std::path::PathBuf> {
        walk(&sshd.files()).into_iter().filter(|p| p.to_string_lossy().contains(".sluice-tmp-")).collect()
    };
    let mut cut_short = 0;
    for round in 0..4u64 {
        let (mut child, _) = start_with_socket(dir.path(), &body);
        workload(&conn, &mut rng, 50);
        // Incompressible pages, so the segment takes a while to go up.
        conn.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 80) \
             INSERT INTO big SELECT randomblob(60000) FROM n;",
        )
        .unwrap();
        // Kill when a put is seen in progress (a temporary file on the
        // server), a little later each round.
        let before = temps();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while temps().len() == before.len() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        std::thread::sleep(std::time::Duration::from_millis(15 * round));
        child.kill().unwrap();
        child.wait().unwrap();
        let left = temps().difference(&before).count();
        cut_short += usize::from(left > 0);
        eprintln!("round {round}: {left} new temporary files on the server after the kill");
    }
    eprintln!("{cut_short} of 4 kills left a put cut short");
    assert!(cut_short > 0, "no kill landed in the middle of a put");
    // Those files are now an hour old: retention's deletes collect them.
    let left = temps();
    for temp in &left {
        let aged = std::process::Command::new("touch").args(["-d", "2 hours ago"]).arg(temp).status().unwrap();
        assert!(aged.success());
    }
    let quick =
        format!("levels:\n  - interval: 1s\nl0-retention: 1s\nsnapshot:\n  interval: 2s\n  retention: 3s\n{}", body);
    let (child, socket) = start_with_socket(dir.path(), &quick);
    let mut points = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
    while std::time::Instant::now() < deadline {
        points.extend(synced_points(&conn, &db, &socket, &mut rng, 1));
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let log = stop(child);
    let still: Vec<_> = left.intersection(&temps()).cloned().collect();
    assert!(still.is_empty(), "left by the kills and not collected: {still:?}\n{log}");
    let (txid, want) = points.last().unwrap();
    let got = restore_image(&url, &dir.path().join("restored.db"), Some(*txid), PAGE);
    assert_same_image(want, &got, &format!("TXID {txid} after four kills"));
    let got = restore_image(&url, &dir.path().join("latest.db"), None, PAGE);
    assert_same_image(&image(&conn), &got, "latest after four kills");
}

/// A slow server's waits are not CPU: with a CPU budget of 1 s a call,
/// a replica behind a link that holds every answer back 250 ms (each call
/// then waits seconds on the network) replicates and restores, because
/// the plugin waits for its socket in the host, not in a loop of its own.
#[test]
fn waiting_on_a_slow_server_does_not_count_as_cpu() {
    let sshd = Sshd::start();
    let link = SlowLink::start(sshd.port, std::time::Duration::from_millis(250));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, PAGE);
    workload(&conn, &mut seeded(34), 40);
    let url = sshd.password_url("slow/app").replace(&format!(":{}/", sshd.port), &format!(":{}/", link.port));
    assert!(url.contains(PASSWORD_USER) && url.contains(&link.port.to_string()), "{url}");
    let config = dir.path().join("sluice.yml");
    let body = format!(
        "dbs:\n  - path: {}\n    replica:\n      url: {url}\n      sandbox:\n        cpu-ms: 1000\n",
        db.display()
    );
    std::fs::write(&config, body).unwrap();
    let started = std::time::Instant::now();
    let out = run_ok(sluice().args(["replicate", "-once", "-config"]).arg(&config));
    let took = started.elapsed();
    assert!(took > std::time::Duration::from_secs(2), "the link was not slow: {took:?}");
    assert!(!text(&out).contains("CPU"), "{}", text(&out));
    let restored = dir.path().join("restored.db");
    run_ok(sluice().args(["restore", "-config"]).arg(&config).arg("-o").arg(&restored).arg(&db));
    assert_same_image(&image(&conn), &file_image(&restored, PAGE), "restored over the slow link");
}
