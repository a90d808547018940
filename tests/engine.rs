//! End-to-end tests of the replication engine: the real `sluice` binary
//! replicating real SQLite databases (written by this test process, i.e.
//! another process) to the bundled file backend, restored page for page.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// Randomised workloads at every page size: after each sync the database
/// image is recorded, and the restore at that TXID must equal it exactly.
#[test]
fn restore_at_every_txid_equals_the_database_then() {
    for (i, page_size) in [512u32, 1024, 4096, 16384, 65536].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let url = file_url(&dir.path().join("replica"));
        let conn = create_db(&db, page_size);
        let mut rng = seeded(1000 + i as u64);
        let mut images: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for step in 0..12 {
            workload(&conn, &mut rng, 40);
            run_ok(sluice().args(["replicate", "-once"]).arg(&db).arg(&url));
            let txid = replica_txid(&url);
            assert!(images.keys().next_back().is_none_or(|&last| txid > last), "step {step}: TXID did not advance");
            images.insert(txid, image(&conn));
        }
        let out = dir.path().join("restored.db");
        for (&txid, want) in &images {
            let got = restore_image(&url, &out, Some(txid), page_size);
            assert_same_image(want, &got, &format!("page size {page_size}, TXID {txid}"));
        }
        let latest = restore_image(&url, &out, None, page_size);
        assert_same_image(images.values().next_back().unwrap(), &latest, "latest");
    }
}

/// `dir/app.db` and its file replica `dir/replica`, in a config file whose
/// top-level keys `top` come before one `dbs:` entry syncing every 100 ms.
fn one_database(dir: &Path, top: &str) -> (rusqlite::Connection, String, std::path::PathBuf) {
    let db = dir.join("app.db");
    let conn = create_db(&db, 4096);
    let url = file_url(&dir.join("replica"));
    let config = dir.join("sluice.yml");
    let entry = format!(
        "dbs:\n  - path: {}\n    monitor-interval: 50ms\n    replicas:\n      - url: {url}\n        sync-interval: 100ms\n",
        db.display()
    );
    std::fs::write(&config, format!("{top}{entry}")).unwrap();
    (conn, url, config)
}

fn write_config(dir: &Path, db: &Path, replicas: &[String]) -> std::path::PathBuf {
    let mut text = format!(
        "dbs:\n  - path: {}\n    monitor-interval: 50ms\n    min-checkpoint-page-count: 200\n    replicas:\n",
        db.display()
    );
    for (i, r) in replicas.iter().enumerate() {
        text.push_str(&format!("      - name: r{i}\n        url: {r}\n        sync-interval: 50ms\n"));
    }
    let path = dir.join("sluice.yml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A writer in another process keeps committing (and checkpointing) while
/// sluice replicates to two replicas; both restore to the final state.
#[test]
fn concurrent_writer_two_replicas_restore_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, 4096);
    let urls = [file_url(&dir.path().join("r0")), file_url(&dir.path().join("r1"))];
    let config = write_config(dir.path(), &db, &urls);
    let child = start_replicator(&config);
    let mut rng = seeded(7);
    let deadline = Instant::now() + Duration::from_secs(6);
    while Instant::now() < deadline {
        workload(&conn, &mut rng, 20);
    }
    let want = image(&conn);
    // The final sync at shutdown must ship the last writes.
    let log = stop(child);
    for url in &urls {
        let got = restore_image(url, &dir.path().join("out.db"), None, 4096);
        assert_same_image(&want, &got, &format!("replica {url}\n{log}"));
    }
}

/// kill -9 at random moments, restart each time: no transaction lost or
/// duplicated, every restore point still verifies. While sluice is down
/// the application commits and restarts the WAL; restarts continue the
/// chain with the pages that changed, not a snapshot.
#[test]
fn kill_dash_nine_loop_still_restores_exactly() {
    use rand::RngExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, 1024);
    let url = file_url(&dir.path().join("replica"));
    let config = write_config(dir.path(), &db, std::slice::from_ref(&url));
    let mut rng = seeded(99);
    // Pages the workload never touches, so a resume has pages to leave out
    // (the workload rewrites most of a small database at every step).
    conn.execute_batch(
        "CREATE TABLE bulk(x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000) \
         INSERT INTO bulk SELECT randomblob(200) FROM n;",
    )
    .unwrap();
    let mut logs = String::new();
    for round in 0..8 {
        let mut child = start_replicator(&config);
        let until = Instant::now() + Duration::from_millis(rng.random_range(200..1500));
        while Instant::now() < until {
            workload(&conn, &mut rng, 5);
        }
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "round {round}: sluice should have been killed");
        logs.push_str(&String::from_utf8_lossy(&out.stderr));
        if round % 2 == 0 {
            // A few commits, then a checkpoint that restarts the WAL: the
            // frames since sluice's last capture are gone from the WAL.
            for i in 0..5 {
                conn.execute("INSERT INTO t(a) VALUES (?1)", [format!("while sluice was down, {round}.{i}")]).unwrap();
            }
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
            conn.execute("INSERT INTO t(a) VALUES ('after the restart of the WAL')", []).unwrap();
        }
    }
    workload(&conn, &mut rng, 30);
    let want = image(&conn);
    let child = start_replicator(&config);
    // Let it catch up, then stop cleanly (final sync).
    std::thread::sleep(Duration::from_millis(500));
    logs.push_str(&stop(child));
    // Every restart finds a gap (the killed capture's tail, and the
    // application's auto-checkpoint after a VACUUM, restart the WAL). It is
    // bridged by the pages that changed, unless most did (a VACUUM among
    // the frames the killed sluice had not captured): never for another
    // reason.
    let resumes = logs.matches("replication resumes after a gap").count();
    let snapshots: Vec<&str> = logs.lines().filter(|l| l.contains("restarts with a snapshot")).collect();
    eprintln!("{resumes} restarts resumed the chain after a gap, {} took a snapshot", snapshots.len());
    // How many bridge depends on the machine's speed: the rounds are timed,
    // and a faster machine runs more operations, so a VACUUM (1 in 100)
    // falls into the uncaptured second before the kill more often (a CI
    // run saw 2 of 8 where this machine sees 3 or more). One bridge shows
    // the path works; the restore below shows it is right.
    assert!(resumes >= 1, "{resumes} resumes:\n{logs}");
    for line in &snapshots {
        assert!(line.contains("pages differ from the replica's"), "a snapshot for another reason: {line}");
    }
    let out = dir.path().join("out.db");
    assert_same_image(&want, &restore_image(&url, &out, None, 1024), "after kill -9 loop");
    // Every TXID the replica can restore verifies its checksums.
    let listing = run_ok(sluice().args(["ltx", "-level", "all", "--json", &url]));
    let rows: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    let ends: Vec<u64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| u64::from_str_radix(r["max_txid"].as_str().unwrap(), 16).unwrap())
        .collect();
    for txid in ends.iter().step_by((ends.len() / 6).max(1)) {
        restore_image(&url, &out, Some(*txid), 1024);
    }
}

/// A database past the 1 GiB lock-byte page replicates and restores.
#[test]
fn database_crossing_the_lock_page() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("big.db");
    let url = file_url(&dir.path().join("replica"));
    {
        // Bulk-load in rollback mode (no WAL copy of 1 GiB), then WAL.
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "page_size", 65536).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=off; PRAGMA synchronous=off; CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB);",
        )
        .unwrap();
        conn.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1040) INSERT INTO big(b) SELECT zeroblob(1048576) FROM c", []).unwrap();
    }
    let conn = create_db(&db, 65536);
    run_ok(sluice().args(["replicate", "-once"]).arg(&db).arg(&url));
    // Change pages on both sides of the lock page.
    conn.execute("UPDATE big SET b = randomblob(70000) WHERE id IN (1, 1030, 1040)", []).unwrap();
    run_ok(sluice().args(["replicate", "-once"]).arg(&db).arg(&url));
    let want = image(&conn);
    assert!(want.len() as u64 * 65536 > 1 << 30, "database is only {} pages", want.len());
    let got = restore_image(&url, &dir.path().join("out.db"), None, 65536);
    assert_same_image(&want, &got, "past the lock page");
}

/// Corrupt, truncated and missing segments are reported by name, and the
/// output is not created.
#[test]
fn damaged_replicas_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = file_url(&replica);
    let conn = create_db(&db, 4096);
    for i in 0..4 {
        conn.execute("INSERT INTO t(a, b) VALUES (?1, randomblob(3000))", [i]).unwrap();
        run_ok(sluice().args(["replicate", "-once"]).arg(&db).arg(&url));
    }
    // A segment in the middle of the restore plan.
    let plan = run_ok(sluice().args(["restore", "-dry-run", "-json", "-o"]).arg(dir.path().join("x.db")).arg(&url));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let keys: Vec<&str> = plan["segments"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert!(keys.len() >= 3, "expected snapshot + level-0 segments, got {keys:?}");
    let middle = keys[1];
    let seg = replica.join(middle);
    let good = std::fs::read(&seg).expect("planned segment exists");
    let name = middle.split('/').nth(1).unwrap().trim_end_matches(".seg").to_string();
    let out = dir.path().join("out.db");
    let cases: [(&str, Vec<u8>); 2] = [
        ("corrupt", {
            let mut b = good.clone();
            let n = b.len() / 2;
            b[n] ^= 0xff;
            b
        }),
        ("truncated", good[..good.len() - 30].to_vec()),
    ];
    for (what, bytes) in cases {
        std::fs::write(&seg, bytes).unwrap();
        let res = sluice().args(["restore", "-o"]).arg(&out).arg(&url).output().unwrap();
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(!res.status.success(), "{what} segment restored silently");
        assert!(err.contains(&name), "{what}: error does not name the segment {name}: {err}");
        assert!(!out.exists(), "{what}: output created");
    }
    std::fs::remove_file(&seg).unwrap();
    let res = sluice().args(["restore", "-o"]).arg(&out).arg(&url).output().unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success() && err.contains("missing"), "missing segment: {err}");
    // Refuses to overwrite an existing database without -force.
    std::fs::write(&seg, &good).unwrap();
    std::fs::write(&out, b"something").unwrap();
    let res = sluice().args(["restore", "-o"]).arg(&out).arg(&url).output().unwrap();
    assert!(!res.status.success() && String::from_utf8_lossy(&res.stderr).contains("-force"));
    run_ok(sluice().args(["restore", "-force", "-integrity-check", "full", "-o"]).arg(&out).arg(&url));
}

/// The replica's segments as `sluice ltx --json` lists them: (level, min
/// TXID, max TXID, key).
fn segments(url: &str) -> Vec<(u64, u64, u64, String)> {
    let out = run_ok(sluice().args(["ltx", "-level", "all", "--json", url]));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let txid = |r: &serde_json::Value, k: &str| u64::from_str_radix(r[k].as_str().unwrap(), 16).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let (level, min, max) = (r["level"].as_u64().unwrap(), txid(r, "min_txid"), txid(r, "max_txid"));
            (level, min, max, format!("{level:04x}/{min:016x}-{max:016x}.seg"))
        })
        .collect()
}

/// What a level-1 compaction of `inputs` (consecutive segments, oldest
/// first) holds: the newest copy of every page, the first's TXID and
/// checksum before, the last's after.
fn merged(inputs: &[Vec<u8>]) -> Vec<u8> {
    use sluice::segment::{Header, SegmentReader, SegmentWriter};
    let mut pages = BTreeMap::new();
    let mut headers = Vec::new();
    for bytes in inputs {
        let mut r = SegmentReader::from_bytes(bytes.clone()).unwrap();
        r.for_each_page(|p, d| {
            pages.insert(p, d.to_vec());
            Ok(())
        })
        .unwrap();
        pages.retain(|&p, _| p <= r.header().db_pages);
        headers.push(*r.header());
    }
    let (first, last) = (headers[0], headers[headers.len() - 1]);
    let header = Header {
        page_size: first.page_size,
        min_txid: first.min_txid,
        max_txid: last.max_txid,
        timestamp_ms: last.timestamp_ms,
        pre_checksum: first.pre_checksum,
        ..Header::default()
    };
    let mut w = SegmentWriter::new(std::io::Cursor::new(Vec::new()), header).unwrap();
    for (p, d) in &pages {
        w.add_page(*p, d).unwrap();
    }
    w.finish(last.db_pages, last.post_checksum).unwrap().0.into_inner()
}

/// Files beside `out` that a restore left: its temp file or SQLite's.
fn restore_leftovers(out: &Path) -> Vec<String> {
    let name = out.file_name().unwrap().to_str().unwrap();
    let mut left: Vec<String> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(name) && n != name)
        .collect();
    left.sort();
    left
}

/// A valid segment stored under another segment's name is refused by
/// that name: a longer snapshot's bytes over a shorter snapshot used to
/// restore "at TXID a" with TXID b's data, and a level-1 segment's over a
/// level-0 one the later state, both silently (the checksums before
/// matched, and each segment's own checksums hold).
#[test]
fn misnamed_segments_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = file_url(&replica);
    let conn = create_db(&db, 4096);
    // Snapshot 1-1, level-0 segments, and two later snapshots, asked for
    // with `-force-snapshot` (which once spooled the snapshot and shipped
    // the level-0 segment instead, the replica being at the TXID before).
    for (i, snapshot) in [false, false, false, false, true, false, false, true].into_iter().enumerate() {
        conn.execute("INSERT INTO t(a, b) VALUES (?1, randomblob(3000))", [i as i64]).unwrap();
        let mut cmd = sluice();
        cmd.args(["replicate", "-once"]);
        if snapshot {
            cmd.arg("-force-snapshot");
        }
        run_ok(cmd.arg(&db).arg(&url));
    }
    let listed = segments(&url);
    let snapshots: Vec<&(u64, u64, u64, String)> = listed.iter().filter(|s| s.0 == 9 && s.2 > 1).collect();
    assert!(snapshots.len() >= 2, "expected two later snapshots: {listed:?}");
    let (short, long) = (snapshots[0], snapshots[snapshots.len() - 1]);
    let level0: Vec<&(u64, u64, u64, String)> = listed.iter().filter(|s| s.0 == 0 && s.2 < short.2).collect();
    assert!(level0.len() >= 3, "expected level-0 segments before TXID {:x}: {listed:?}", short.2);
    let out = dir.path().join("out.db");
    let refused = |txid: u64, key: &str, what: &str| {
        let res =
            sluice().args(["restore", "-txid", &format!("{txid:016x}"), "-o"]).arg(&out).arg(&url).output().unwrap();
        let (stdout, err) = (String::from_utf8_lossy(&res.stdout), String::from_utf8_lossy(&res.stderr));
        assert!(!res.status.success(), "{what}: restored silently: {stdout}");
        assert!(err.contains(key) && err.contains(&url), "{what}: the error does not name {key} of {url}: {err}");
        assert!(
            !out.exists() && restore_leftovers(&out).is_empty(),
            "{what}: output or temp files left: {:?}",
            restore_leftovers(&out)
        );
    };
    // A longer snapshot copied over a shorter one.
    let short_path = replica.join(&short.3);
    let short_bytes = std::fs::read(&short_path).unwrap();
    std::fs::copy(replica.join(&long.3), &short_path).unwrap();
    refused(short.2, &short.3, "a longer snapshot under a shorter one's name");
    std::fs::write(&short_path, &short_bytes).unwrap();
    // A level-0 segment replaced by a level-1 segment of it and the next two.
    let run: Vec<Vec<u8>> = level0[..3].iter().map(|s| std::fs::read(replica.join(&s.3)).unwrap()).collect();
    let first = replica.join(&level0[0].3);
    std::fs::write(&first, merged(&run)).unwrap();
    refused(level0[0].2, &level0[0].3, "a level-1 segment under a level-0 name");
    std::fs::write(&first, &run[0]).unwrap();
    // Put back, both restore, checked, and the check leaves nothing behind.
    for txid in [level0[0].2, short.2] {
        let _ = std::fs::remove_file(&out);
        run_ok(
            sluice()
                .args(["restore", "-integrity-check", "full", "-txid", &format!("{txid:016x}"), "-o"])
                .arg(&out)
                .arg(&url),
        );
        assert!(restore_leftovers(&out).is_empty(), "files left beside the output: {:?}", restore_leftovers(&out));
    }
}

/// A replica whose segments are sound (every checksum holds) but whose
/// pages make a malformed database (damaged at the source, say) fails the
/// default restore with SQLite's findings and writes no output; with
/// `-integrity-check none` it restores as asked. No temp file or SQLite
/// file is left either way.
#[test]
fn a_malformed_database_fails_the_default_restore() {
    use sluice::segment::{Header, SegmentWriter};
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.db");
    let conn = create_db(&source, 4096);
    for i in 0..2000 {
        conn.execute("INSERT INTO t(a, b) VALUES (?1, randomblob(40))", [format!("row {i} {}", "x".repeat(50))])
            .unwrap();
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    drop(conn);
    // Scramble the cells of the last page, keeping its b-tree header.
    let mut bytes = std::fs::read(&source).unwrap();
    let pages = (bytes.len() / 4096) as u32;
    let last = bytes.len() - 4096;
    for (i, b) in bytes[last + 2048..].iter_mut().enumerate() {
        *b = (i * 37) as u8;
    }
    // A snapshot of exactly those pages, with correct checksums.
    let header = Header { page_size: 4096, min_txid: 1, max_txid: 1, timestamp_ms: 1, ..Header::default() };
    let mut w = SegmentWriter::new(std::io::Cursor::new(Vec::new()), header).unwrap();
    let mut checksum = 0;
    for (i, page) in bytes.chunks(4096).enumerate() {
        let pgno = i as u32 + 1;
        w.add_page(pgno, page).unwrap();
        checksum ^= sluice::checksum::page_hash(pgno, page);
    }
    let segment = w.finish(pages, checksum).unwrap().0.into_inner();
    let replica = dir.path().join("replica");
    std::fs::create_dir_all(replica.join("0009")).unwrap();
    std::fs::write(replica.join("0009/0000000000000001-0000000000000001.seg"), segment).unwrap();
    let url = file_url(&replica);
    let out = dir.path().join("out.db");
    let res = sluice().args(["restore", "-o"]).arg(&out).arg(&url).output().unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        !res.status.success(),
        "a malformed database restored with exit 0: {}",
        String::from_utf8_lossy(&res.stdout)
    );
    assert!(err.contains("quick_check") && err.contains("-integrity-check none"), "unclear error: {err}");
    assert!(!out.exists(), "output written");
    assert!(restore_leftovers(&out).is_empty(), "files left beside the output: {:?}", restore_leftovers(&out));
    let res = sluice().args(["restore", "-integrity-check", "full", "-o"]).arg(&out).arg(&url).output().unwrap();
    assert!(
        !res.status.success() && String::from_utf8_lossy(&res.stderr).contains("integrity_check"),
        "full check: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(!out.exists() && restore_leftovers(&out).is_empty(), "full check left {:?}", restore_leftovers(&out));
    run_ok(sluice().args(["restore", "-integrity-check", "none", "-o"]).arg(&out).arg(&url));
    assert_eq!(std::fs::read(&out).unwrap(), bytes, "restored as stored");
    assert!(restore_leftovers(&out).is_empty(), "files left beside the output: {:?}", restore_leftovers(&out));
}

/// Small spool segments are not fsynced: one that a power failure left
/// damaged (zeros, here) while its replica was unreachable is caught at
/// upload, dropped, and the replica continues from a snapshot. Nothing
/// damaged is shipped, and the replica restores exactly.
#[test]
fn a_damaged_spool_segment_is_replaced_by_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = file_url(&replica);
    let conn = create_db(&db, 4096);
    let mut rng = seeded(5);
    workload(&conn, &mut rng, 20);
    run_ok(sluice().args(["replicate", "-once"]).arg(&db).arg(&url));
    // Level-0 uploads start failing: the next sync stays in the spool.
    let level0 = replica.join("0000");
    assert!(!level0.exists(), "the first sync is a snapshot");
    std::fs::write(&level0, b"not a directory").unwrap();
    // Plain writes (the workload's checkpoints would restart the chain).
    for i in 0..20 {
        conn.execute("INSERT INTO t(a, b) VALUES (?1, randomblob(300))", [i]).unwrap();
    }
    let res = sluice().args(["replicate", "-once"]).arg(&db).arg(&url).output().unwrap();
    assert!(!res.status.success(), "the replica was unreachable");
    let spool = dir.path().join(".app.db-sluice/spool");
    let stuck: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("0000-"))
        .collect();
    assert_eq!(
        stuck.len(),
        1,
        "one level-0 segment waits in the spool: {stuck:?} {:?}\n{}",
        std::fs::read_dir(&spool).unwrap().map(|e| e.unwrap().path()).collect::<Vec<_>>(),
        String::from_utf8_lossy(&res.stderr)
    );
    let len = std::fs::metadata(&stuck[0]).unwrap().len() as usize;
    std::fs::write(&stuck[0], vec![0u8; len]).unwrap();
    std::fs::remove_file(&level0).unwrap();
    // The next run (cron style, `-once`) finds the damage while shipping and
    // still ends with the replica current, by way of a snapshot.
    for i in 20..40 {
        conn.execute("INSERT INTO t(a, b) VALUES (?1, randomblob(300))", [i]).unwrap();
    }
    let want = image(&conn);
    let out = run_ok(sluice().args(["replicate", "-once"]).arg(&db).arg(&url));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(log.contains("is damaged"), "the damage was not reported:\n{log}");
    assert_same_image(
        &want,
        &restore_image(&url, &dir.path().join("out.db"), None, 4096),
        &format!("after a damaged spool segment\n{log}"),
    );
}

/// The WAL reader agrees with SQLite's own `showwal` on a fixture.
#[test]
fn wal_reader_agrees_with_showwal() {
    let Ok(showwal) = which("showwal") else {
        assert!(std::env::var_os("CI").is_none(), "showwal (apt sqlite3-tools) must be installed in CI");
        eprintln!("showwal not installed; skipping the cross-check");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("w.db");
    let conn = create_db(&db, 1024);
    conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    let mut rng = seeded(5);
    workload(&conn, &mut rng, 60);
    let wal = dir.path().join("w.db-wal");
    let out = std::process::Command::new(showwal).arg(&wal).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // showwal prints one line per frame: "Frame    N:   PGNO   COMMIT SALTS CHECKSUMS".
    let frames: Vec<(u32, u32)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.trim_start().strip_prefix("Frame")?;
            let mut fields = rest.split_whitespace().skip(1);
            Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
        })
        .collect();
    let header = sluice::wal::WalHeader::read(&wal).unwrap().unwrap();
    let scan = header.scan(&std::fs::File::open(&wal).unwrap(), header.start(), None).unwrap();
    assert!(!frames.is_empty(), "could not parse showwal output:\n{text}");
    let last_commit = frames.iter().rposition(|(_, commit)| *commit != 0).unwrap();
    let frames = &frames[..=last_commit];
    assert_eq!(scan.db_pages, Some(frames[last_commit].1), "database size after the last commit");
    assert_eq!(scan.end.unwrap().frames as usize, frames.len(), "frame count differs from showwal:\n{text}");
    let mut newest = BTreeMap::new();
    for (i, (pgno, _)) in frames.iter().enumerate() {
        newest.insert(*pgno, i as u32);
    }
    newest.retain(|p, _| *p <= scan.db_pages.unwrap());
    assert_eq!(newest, scan.pages);
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.exists()))
        .ok_or(())
}

/// `-exec` runs the application as a child, syncs after it exits, and
/// exits with its status; `addr:` serves Prometheus metrics meanwhile.
#[test]
fn exec_child_final_sync_exit_status_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, 4096);
    drop(conn);
    let url = file_url(&dir.path().join("replica"));
    let port = 20000 + (std::process::id() % 20000) as u16;
    let config = dir.path().join("sluice.yml");
    std::fs::write(
        &config,
        format!(
            "addr: 127.0.0.1:{port}\ndbs:\n  - path: {}\n    monitor-interval: 50ms\n    replica:\n      url: {url}\n",
            db.display()
        ),
    )
    .unwrap();
    // The "application": waits, writes one row, and fails with status 3.
    // -exec runs no shell of its own (as Litestream): a script needs one.
    let script = dir.path().join("app.sh");
    std::fs::write(
        &script,
        format!(
            "sleep 1; python3 -c \"import sqlite3; c=sqlite3.connect('{}'); c.execute(\\\"INSERT INTO t(a) VALUES ('from-child')\\\"); c.commit()\"; sleep 0.3; exit 3",
            db.display()
        ),
    )
    .unwrap();
    let app = format!("sh '{}'", script.display());
    let mut child = sluice()
        .args(["replicate", "-config"])
        .arg(&config)
        .args(["-exec", &app])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let metrics = http_get(port, "/metrics");
    assert!(metrics.contains("sluice_txid{db="), "metrics page lacks sluice_txid:\n{metrics}");
    assert!(metrics.contains("sluice_plugin_calls_total"), "metrics page lacks plugin calls");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "sluice must exit with the child's status");
    let out = dir.path().join("out.db");
    restore_image(&url, &out, None, 4096);
    let n: i64 = rusqlite::Connection::open(&out)
        .unwrap()
        .query_row("SELECT count(*) FROM t WHERE a = 'from-child'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1, "the child's last write was not synced before exit");
}

/// SIGTERM to sluice reaches the `-exec` application itself, which is run
/// without a shell in between (Litestream's way): sluice waits for it and
/// exits with its status. Before, `sh -c` got the signal and the
/// application was left running, orphaned.
#[test]
fn exec_forwards_sigterm_to_the_application_itself() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    drop(create_db(&db, 4096));
    let config = write_config(dir.path(), &db, &[file_url(&dir.path().join("replica"))]);
    let app = "python3 -c 'import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\nprint(\"up\", flush=True)\ntime.sleep(60)'";
    let mut child = sluice()
        .args(["replicate", "-config"])
        .arg(&config)
        .args(["-exec", app])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "up", "the application did not start");
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let until = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < until, "sluice did not exit after SIGTERM: the application never got it");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(7), "sluice must exit with the application's status");
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port open");
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Compaction, periodic snapshots and retention on short intervals: the
/// replica gains level-1 segments and new snapshots, loses what no allowed
/// restore point needs, and still restores exactly.
#[test]
fn compaction_snapshots_and_retention_keep_restores_exact() {
    let dir = tempfile::tempdir().unwrap();
    let top = "snapshot:\n  interval: 3s\n  retention: 4s\nlevels:\n  - interval: 1s\nl0-retention: 1s\n";
    let (conn, url, config) = one_database(dir.path(), top);
    let child = start_replicator(&config);
    let mut rng = seeded(11);
    let deadline = Instant::now() + Duration::from_secs(9);
    while Instant::now() < deadline {
        workload(&conn, &mut rng, 5);
        std::thread::sleep(Duration::from_millis(50));
    }
    // Then appends only, in page-sized rows: their level-0 blocks stay the
    // newest copies, so a compaction copies them whatever way the random
    // phase's commits happened to fall into syncs.
    let appends = Instant::now() + Duration::from_secs(3);
    while Instant::now() < appends {
        conn.execute_batch("BEGIN; INSERT INTO t(a, b) SELECT 'append', randomblob(3000) FROM (SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5) JOIN (SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4); COMMIT;").unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let want = image(&conn);
    std::thread::sleep(Duration::from_millis(1500));
    stop(child);
    let listing = run_ok(sluice().args(["ltx", "-level", "all", "--json", &url]));
    let rows: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    let level = |l: u64| rows.iter().filter(|r| r["level"].as_u64() == Some(l)).count();
    let txid = |r: &serde_json::Value, k: &str| u64::from_str_radix(r[k].as_str().unwrap(), 16).unwrap();
    assert!(level(1) >= 1, "no level-1 compaction: {rows:?}");
    assert!(level(9) >= 1, "no snapshot left: {rows:?}");
    // Some compaction copied blocks as stored (a version 2 segment), so the
    // restores below go through one.
    let versions: Vec<u8> = std::fs::read_dir(dir.path().join("replica/0001"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap()[7])
        .collect();
    assert!(versions.contains(&2), "no level-1 segment copied blocks: versions {versions:?}");
    let oldest_snapshot = rows.iter().filter(|r| r["level"] == 9).map(|r| txid(r, "max_txid")).min().unwrap();
    assert!(oldest_snapshot > 1, "retention kept the first snapshot past its window: {rows:?}");
    let newest = rows.iter().map(|r| txid(r, "max_txid")).max().unwrap();
    let covered_l0 = rows.iter().filter(|r| r["level"] == 0 && txid(r, "max_txid") <= oldest_snapshot).count();
    assert_eq!(covered_l0, 0, "level-0 segments older than every kept snapshot survived: {rows:?}");
    assert_same_image(
        &want,
        &restore_image(&url, &dir.path().join("out.db"), None, 4096),
        "after compaction and retention",
    );
    // An older restore point inside the window still restores (and verifies).
    let mut ends: Vec<u64> =
        rows.iter().map(|r| txid(r, "max_txid")).filter(|&t| t >= oldest_snapshot && t < newest).collect();
    ends.sort();
    if let Some(&mid) = ends.get(ends.len() / 2) {
        restore_image(&url, &dir.path().join("mid.db"), Some(mid), 4096);
    }
}

/// A level-0 run small enough to compact in memory may still hold one
/// segment over the in-memory fetch limit (a transaction of a few MB):
/// that one is downloaded through a scratch file, and the run compacts.
/// It used to fail every level interval ("too large to fetch into memory").
#[test]
fn a_run_holding_a_segment_over_a_mib_compacts() {
    let dir = tempfile::tempdir().unwrap();
    let (conn, url, config) = one_database(dir.path(), "levels:\n  - interval: 1s\n");
    let child = start_replicator(&config);
    std::thread::sleep(Duration::from_millis(500));
    // Random bytes do not compress: a level-0 segment of about 2 MB.
    conn.execute("INSERT INTO t(a, b) VALUES ('big', randomblob(2000000))", []).unwrap();
    for i in 0..5 {
        std::thread::sleep(Duration::from_millis(300));
        conn.execute("INSERT INTO t(a, b) VALUES (?1, randomblob(100))", [format!("small {i}")]).unwrap();
    }
    let want = image(&conn);
    // Level 1 is compacted every second; wait for one that covers the big
    // transaction (its segment is TXID 2, after the first snapshot).
    let listed = |url: &str| -> Vec<serde_json::Value> {
        let out = run_ok(sluice().args(["ltx", "-level", "all", "--json", url]));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap().as_array().unwrap().clone()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let covered = loop {
        let rows = listed(&url);
        let hex = |r: &serde_json::Value, k: &str| u64::from_str_radix(r[k].as_str().unwrap(), 16).unwrap();
        if rows.iter().any(|r| r["level"] == 1 && hex(r, "min_txid") <= 2 && hex(r, "max_txid") >= 2) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    stop(child);
    assert!(covered, "no level-1 segment covers the large transaction: {:?}", listed(&url));
    assert_same_image(&want, &restore_image(&url, &dir.path().join("out.db"), None, 4096), "after compaction");
}

/// `restore -f` keeps applying new changes to its output.
#[test]
fn restore_follow_keeps_up_with_the_replica() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, 4096);
    let url = file_url(&dir.path().join("replica"));
    let config = write_config(dir.path(), &db, std::slice::from_ref(&url));
    let mut rng = seeded(21);
    workload(&conn, &mut rng, 20);
    let replicator = start_replicator(&config);
    // Wait for the first snapshot, then follow.
    let started = Instant::now();
    while replica_txid(&url) == 0 && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = dir.path().join("follower.db");
    let follower = sluice()
        .args(["restore", "-f", "-follow-interval", "100ms", "-o"])
        .arg(&out)
        .arg(&url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        workload(&conn, &mut rng, 5);
        std::thread::sleep(Duration::from_millis(30));
    }
    let want = image(&conn);
    stop(replicator);
    // The follower catches up with the final state.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while Instant::now() < deadline {
        got = file_image(&out, 4096);
        if got == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = stop(follower);
    assert_same_image(&want, &got, &format!("follower\n{log}"));
}

/// A transaction whose frames are in the WAL before its commit (here a
/// small page cache spills them while it is held open) is seen in flight
/// and picked up as soon as it commits, not a sync interval later: a look
/// that found the WAL changed but nothing committed used to count as busy
/// and pause notifications for the whole interval. (The interval is 3 s
/// and the bound 2 s; the pick-up takes milliseconds.)
#[test]
fn a_transaction_caught_half_written_ships_when_it_commits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, 4096);
    let url = file_url(&dir.path().join("replica"));
    let config = dir.path().join("sluice.yml");
    std::fs::write(&config, format!("dbs:\n  - path: {}\n    monitor-interval: 3s\n    replicas:\n      - url: {url}\n        sync-interval: 3s\n", db.display())).unwrap();
    let child = start_replicator(&config);
    let started = Instant::now();
    while replica_txid(&url) == 0 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Past the first sync's batch: the database is quiet and watched.
    std::thread::sleep(Duration::from_millis(3500));
    let before = replica_txid(&url);
    conn.pragma_update(None, "cache_size", 5).unwrap();
    conn.execute_batch("BEGIN").unwrap();
    for i in 0..200 {
        conn.execute("INSERT INTO t(a, b) VALUES (?1, randomblob(1000))", [format!("row {i}")]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    conn.execute_batch("COMMIT").unwrap();
    let committed = Instant::now();
    while replica_txid(&url) == before && committed.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let lag = committed.elapsed();
    stop(child);
    assert!(lag < Duration::from_secs(2), "the commit became durable {lag:?} after it was made");
}
