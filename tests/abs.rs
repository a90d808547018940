//! The bundled Azure Blob Storage plugin against a real Azure Blob API
//! server (Azurite, from npm): the conformance suite; replication from a
//! Litestream-shaped config while this process writes, restored at every
//! TXID a `sync -wait` reported and compared page for page; a wrong key
//! and a missing container, each said once; and a backup Litestream
//! 0.5.17 wrote to the same server, restored by sluice.

mod common;

use common::azurite::{ACCOUNT, Azurite, KEY, with_key};
use common::litestream_bin::litestream;
use common::*;
use std::path::Path;
use std::process::{Command, Output};

const PAGE: u32 = 4096;

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Restore `url` (at `txid` if given) with the key from the environment.
fn restore(url: &str, out: &Path, txid: Option<u64>) -> Vec<u64> {
    let mut cmd = sluice();
    with_key(&mut cmd);
    restore_image_with(cmd, url, out, txid, PAGE)
}

#[test]
fn the_conformance_suite_passes() {
    let az = Azurite::start();
    az.create_container("check");
    let out = run_ok(with_key(&mut sluice()).args(["plugin", "check"]).arg(az.url("check", "suite")));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("checking plugin `abs`"), "{stdout}");
    let summary = stdout.lines().find(|l| l.contains(" passed, ")).expect("a summary line");
    // Conditional writes and multipart included: nothing skipped.
    assert!(summary.contains(" 0 failed") && summary.contains(" 0 skipped"), "{stdout}");
}

/// A SAS token instead of the account key (`sas-token`, as Litestream's
/// `LITESTREAM_AZURE_SAS_TOKEN`): the whole suite passes on it, and a
/// token with a wrong signature is refused as credentials.
#[test]
fn a_sas_token_authenticates() {
    let az = Azurite::start();
    az.create_container("sas");
    let token = az.sas_token();
    let check = |token: &str| {
        sluice()
            .args(["plugin", "check"])
            .arg(az.url("sas", "suite"))
            .env("LITESTREAM_AZURE_SAS_TOKEN", token)
            .output()
            .unwrap()
    };
    let out = check(&token);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("17 passed, 0 failed"), "{}", text(&out));
    let forged = token.replace("sig=", "sig=AAAA");
    let out = check(&forged);
    assert!(!out.status.success());
    assert!(text(&out).contains("refused the credentials"), "{}", text(&out));
}

#[test]
fn a_wrong_key_and_a_missing_container_are_said_once() {
    let az = Azurite::start();
    az.create_container("check");
    let wrong = "d3Jvbmcga2V5IGZvciB0aGUgdGVzdA==";
    let out = sluice()
        .args(["plugin", "check", "-s", &format!("account-key={wrong}")])
        .arg(az.url("check", "p"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let all = text(&out);
    let fails: Vec<&str> = all.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert_eq!(fails.len(), 1, "{all}");
    assert!(fails[0].contains("credentials") && fails[0].contains("account-key"), "{all}");

    let out = with_key(&mut sluice()).args(["plugin", "check"]).arg(az.url("nothere", "p")).output().unwrap();
    assert!(!out.status.success());
    let all = text(&out);
    let fails: Vec<&str> = all.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert_eq!(fails.len(), 1, "{all}");
    assert!(fails[0].contains("container `nothere` does not exist"), "{all}");
}

#[test]
fn replicates_and_restores_at_every_synced_txid() {
    let az = Azurite::start();
    az.create_container("backups");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, PAGE);
    // Litestream's shape: type, bucket, path, account-name/-key, endpoint.
    let body = format!(
        "dbs:\n  - path: {}\n    replica:\n      type: abs\n      account-name: {ACCOUNT}\n      account-key: {KEY}\n      bucket: backups\n      path: db/app\n      endpoint: {}\n",
        db.display(),
        az.endpoint()
    );
    let (child, socket) = start_with_socket(dir.path(), &body);
    let mut rng = seeded(31);
    let points = synced_points(&conn, &db, &socket, &mut rng, 6);
    stop(child);
    let url = az.url("backups", "db/app");
    for (txid, want) in &points {
        let got = restore(&url, &dir.path().join("restored.db"), Some(*txid));
        assert_same_image(want, &got, &format!("TXID {txid}"));
    }
    drop(conn);
}

/// Litestream 0.5.17 replicates to Azurite; sluice restores what it wrote.
#[test]
fn a_litestream_backup_on_azure_restores() {
    let az = Azurite::start();
    az.create_container("litestream");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, PAGE);
    let mut rng = seeded(32);
    workload(&conn, &mut rng, 30);
    let config = dir.path().join("litestream.yml");
    let yaml = format!(
        "dbs:\n  - path: {}\n    replica:\n      url: abs://{ACCOUNT}@litestream/app\n      endpoint: {}\n      sync-interval: 100ms\n",
        db.display(),
        az.endpoint()
    );
    std::fs::write(&config, yaml).unwrap();
    let out = litestream_writes(with_key(&mut Command::new(litestream("0.5.17"))), &config, &conn, &mut rng);
    let listed = run_ok(with_key(&mut sluice()).args(["ltx", "-level", "all"]).arg(az.url("litestream", "app")));
    assert!(!listed.stdout.is_empty(), "Litestream wrote nothing:\n{}", text(&out));
    let want = image(&conn);
    let got = restore(&az.url("litestream", "app"), &dir.path().join("restored.db"), None);
    assert_same_image(&want, &got, "Litestream's Azure backup");
}
