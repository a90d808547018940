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

/// A server that takes PUTs of at most 1 MiB (`webdav-max-put-size`, as
/// behind nginx's default body limit): snapshots of ~2.6 MB go up in
/// parts, no object on the server is larger than the limit, retention
/// removes old snapshots' parts with them, and restores are exact.
#[test]
fn segments_larger_than_a_put_are_stored_in_parts_and_restore() {
    const LIMIT: u64 = 1 << 20;
    let dav = WebDav::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, PAGE);
    // Random bytes, which zstd cannot shrink below the limit, in a table
    // the workload leaves alone.
    conn.execute_batch("CREATE TABLE big(b BLOB)").unwrap();
    for _ in 0..30 {
        conn.execute("INSERT INTO big(b) VALUES (randomblob(90000))", []).unwrap();
    }
    let url = dav.url("backups/big");
    let body = format!(
        "snapshot:\n  interval: 2s\n  retention: 3s\ndbs:\n  - path: {}\n    replica:\n      url: {url}\n      webdav-max-put-size: {LIMIT}\n",
        db.display()
    );
    let (child, socket) = start_with_socket(dir.path(), &body);
    let mut rng = seeded(23);
    let mut points = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
    while std::time::Instant::now() < deadline {
        points.extend(synced_points(&conn, &db, &socket, &mut rng, 1));
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    stop(child);
    let files = walk(&dav.root.path().join("data/backups/big"));
    let largest = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).max().unwrap();
    assert!(largest <= LIMIT, "an object of {largest} bytes went past the server's limit: {files:?}");
    let part_files: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n.contains(".seg.part-"))
        .collect();
    assert!(part_files.iter().any(|n| n.ends_with("-last")), "no split segment: {files:?}");
    let listing = run_ok(sluice().args(["ltx", "-level", "all", "--json", &url]));
    let rows: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    let snapshots: Vec<&serde_json::Value> = rows.iter().filter(|r| r["level"] == 9).collect();
    assert!(snapshots.iter().all(|r| r["parts"].as_u64().unwrap() >= 3), "{rows:?}");
    assert!(snapshots.iter().all(|r| r["size"].as_u64().unwrap() > 2 * LIMIT), "{rows:?}");
    // Retention removed the first snapshot, parts and all: every part on
    // the server belongs to a segment the replica lists.
    let oldest = snapshots.iter().map(|r| u64::from_str_radix(r["max_txid"].as_str().unwrap(), 16).unwrap()).min();
    assert!(oldest.unwrap() > 1, "retention kept the first snapshot: {rows:?}");
    for part in &part_files {
        let seg = part.split(".part-").next().unwrap();
        let listed = rows
            .iter()
            .any(|r| format!("{}-{}.seg", r["min_txid"].as_str().unwrap(), r["max_txid"].as_str().unwrap()) == seg);
        assert!(listed, "{part} belongs to no listed segment: {rows:?}");
    }
    let newest = points.last().unwrap();
    let got = restore_image(&url, &dir.path().join("restored.db"), None, PAGE);
    assert_same_image(&newest.1, &got, "newest");
    for (txid, want) in points.iter().filter(|(t, _)| *t >= oldest.unwrap()) {
        let got = restore_image(&url, &dir.path().join("restored.db"), Some(*txid), PAGE);
        assert_same_image(want, &got, &format!("TXID {txid}"));
    }
    drop(conn);
}

/// An encrypted replica on a server with a small PUT limit, its
/// replicator killed (SIGKILL) part-way through uploads of ~100-part
/// segments and restarted: each retry finds what the last attempt left (an
/// incomplete set, or a complete one not yet recorded, sealed differently
/// from the retry) and completes or replaces it without a mix of the two;
/// every restore is exact.
#[test]
fn an_encrypted_segment_in_parts_survives_kills_and_restores() {
    use age::secrecy::ExposeSecret;
    use rand::RngExt;
    const LIMIT: u64 = 64 << 10;
    let dav = WebDav::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, PAGE);
    conn.execute_batch("CREATE TABLE big(b BLOB)").unwrap();
    let id = age::x25519::Identity::generate();
    let (recipient, identity) = (id.to_public().to_string(), id.to_string().expose_secret().to_string());
    let body = format!(
        "dbs:\n  - path: {}\n    replica:\n      name: sealed\n      url: {}\n      webdav-max-put-size: {LIMIT}\n      age:\n        recipients:\n          - {recipient}\n        identities:\n          - {identity}\n",
        db.display(),
        dav.url("sealed/app")
    );
    let mut rng = seeded(26);
    for round in 0..4 {
        for _ in 0..40 {
            conn.execute("INSERT INTO big(b) VALUES (randomblob(150000))", []).unwrap();
        }
        let parts = || {
            let files = walk(&dav.root.path().join("data/sealed/app"));
            let count = |p: &dyn Fn(&str) -> bool| files.iter().filter(|f| p(&f.to_string_lossy())).count();
            (count(&|f| f.contains(".part-")), count(&|f| f.ends_with("-last")))
        };
        let before = parts().0;
        let (mut child, _socket) = start_with_socket(dir.path(), &body);
        // Kill once parts are going up, a moment later.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while parts().0 <= before + 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(rng.random_range(0..150)));
        child.kill().unwrap();
        child.wait().unwrap();
        eprintln!("round {round}: killed with (parts, final parts) {:?}", parts());
    }
    let (child, socket) = start_with_socket(dir.path(), &body);
    let points = synced_points(&conn, &db, &socket, &mut rng, 2);
    stop(child);
    let files = walk(&dav.root.path().join("data/sealed/app"));
    assert!(files.iter().any(|f| f.to_string_lossy().ends_with("-last")), "nothing split: {files:?}");
    let largest = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).max().unwrap();
    assert!(largest <= LIMIT, "an object of {largest} bytes");
    let config = dir.path().join("sluice.yml");
    let out = dir.path().join("restored.db");
    for (txid, want) in &points {
        let _ = std::fs::remove_file(&out);
        let mut cmd = sluice();
        cmd.args(["restore", "-config"]).arg(&config).args([
            "-replica",
            "sealed",
            "-txid",
            &format!("{txid:016x}"),
            "-o",
        ]);
        run_ok(cmd.arg(&out).arg(&db));
        assert_same_image(want, &file_image(&out, PAGE), &format!("TXID {txid}"));
    }
}
