//! The bundled WebDAV plugin against a real WebDAV server (wsgidav, from
//! PyPI): the conformance suite; replication while this process writes,
//! restored at every TXID a `sync -wait` reported and compared page for
//! page; a wrong password reported as such; and a backup Litestream
//! 0.5.17 wrote to the same server, restored by sluice.

mod common;

use common::litestream_bin::litestream;
use common::webdav::{PASSWORD, USER, WebDav};
use common::*;
use std::path::Path;
use std::process::{Command, Output};

const PAGE: u32 = 4096;

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn the_conformance_suite_passes() {
    let dav = WebDav::start();
    let out = run_ok(sluice().args(["plugin", "check"]).arg(dav.url("check")));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("checking plugin `webdav`"), "{stdout}");
    let summary = stdout.lines().find(|l| l.contains(" passed, ")).expect("a summary line");
    assert!(summary.contains(" 0 failed"), "{stdout}");
    assert!(!stdout.lines().any(|l| l.starts_with("FAIL ")), "{stdout}");
    // What it cannot do is skipped and said, not failed.
    assert!(stdout.contains("SKIP"), "{stdout}");
}

#[test]
fn a_wrong_password_says_so() {
    let dav = WebDav::start();
    let url = format!("webdav://{USER}:wrong@127.0.0.1:{}/check", dav.port);
    let out = sluice().args(["plugin", "check"]).arg(&url).output().unwrap();
    assert!(!out.status.success());
    let all = text(&out);
    assert!(all.contains("401") || all.to_lowercase().contains("access denied"), "{all}");
    // Said once, not as a failure of every case.
    let fails: Vec<&str> = all.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert_eq!(fails.len(), 1, "{all}");
    assert!(fails[0].contains("credentials"), "{all}");
}

#[test]
fn replicates_and_restores_at_every_synced_txid() {
    let dav = WebDav::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, PAGE);
    let body = format!("dbs:\n  - path: {}\n    replica:\n      url: {}\n", db.display(), dav.url("backups/app"));
    let (child, socket) = start_with_socket(dir.path(), &body);
    let mut rng = seeded(21);
    let points = synced_points(&conn, &db, &socket, &mut rng, 6);
    stop(child);
    // The replica is files on the server, in the replica's own collection.
    assert!(!walk(&dav.root.path().join("data/backups/app")).is_empty());
    let url = dav.url("backups/app");
    for (txid, want) in &points {
        let got = restore_image(&url, &dir.path().join("restored.db"), Some(*txid), PAGE);
        assert_same_image(want, &got, &format!("TXID {txid}"));
    }
    drop(conn);
}

/// Litestream 0.5.17 replicates to the server; sluice restores what it wrote.
#[test]
fn a_litestream_backup_on_webdav_restores() {
    let dav = WebDav::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, PAGE);
    let mut rng = seeded(22);
    workload(&conn, &mut rng, 30);
    let config = dir.path().join("litestream.yml");
    let yaml = format!(
        "dbs:\n  - path: {}\n    replica:\n      type: webdav\n      webdav-url: http://127.0.0.1:{}\n      webdav-username: {USER}\n      webdav-password: {PASSWORD}\n      path: /ls/app\n      sync-interval: 100ms\n",
        db.display(),
        dav.port
    );
    std::fs::write(&config, yaml).unwrap();
    let out = litestream_writes(&mut Command::new(litestream("0.5.17")), &config, &conn, &mut rng);
    assert!(Path::new(&dav.root.path().join("data/ls/app")).exists(), "Litestream wrote nothing:\n{}", text(&out));
    let want = image(&conn);
    let got = restore_image(&dav.url("ls/app"), &dir.path().join("restored.db"), None, PAGE);
    assert_same_image(&want, &got, "Litestream's WebDAV backup");
}
