//! Stores without conditional writes on the S3 plugin, against SeaweedFS:
//! an `s3://` replica told `conditionalWrites=false`, and Alibaba Cloud
//! OSS (`oss://`, whose S3-compatible API sluice does not trust with
//! conditional writes) pointed at the same server. Each store says it has
//! no conditional writes (`store.capabilities`), so the conformance suite
//! skips those cases and the replica keeps one writer by the host's
//! fallback; each replicates while this process writes, and restores
//! exactly at every TXID a `sync -wait` reported.

mod common;

use common::seaweed::{ACCESS_KEY, BUCKET, SECRET_KEY, Seaweed};
use common::*;
use std::process::Output;

const PAGE: u32 = 4096;

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn stores_without_conditional_writes_check_replicate_and_restore() {
    let s3 = Seaweed::start();
    let endpoint = s3.endpoint();
    let url_of = |kind: &str, path: &str| match kind {
        "s3" => format!("s3://{BUCKET}/{path}?endpoint={endpoint}&conditionalWrites=false"),
        _ => format!("oss://{BUCKET}/{path}?endpoint={endpoint}"),
    };
    for (i, kind) in ["s3", "oss"].into_iter().enumerate() {
        let url = &url_of(kind, &format!("{kind}/app"));
        // OSS's keys come from Alibaba's variables, S3's from the config.
        let mut check = sluice();
        check.env("ALIBABA_CLOUD_ACCESS_KEY_ID", ACCESS_KEY).env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", SECRET_KEY);
        check.args(["plugin", "check"]);
        if kind == "s3" {
            check.args([
                "-s",
                &format!("access-key-id={ACCESS_KEY}"),
                "-s",
                &format!("secret-access-key={SECRET_KEY}"),
            ]);
        }
        let out = check.arg(url_of(kind, &format!("{kind}/check"))).output().unwrap();
        let all = text(&out);
        assert!(out.status.success(), "{kind}: {all}");
        assert!(all.contains("checking plugin `s3`") && all.contains(" 0 failed"), "{kind}: {all}");
        assert!(all.lines().any(|l| l.starts_with("SKIP") && l.contains("conditional")), "{kind}: {all}");

        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let conn = create_db(&db, PAGE);
        let body = format!(
            "dbs:\n  - path: {}\n    replica:\n      url: {url}\n      access-key-id: {ACCESS_KEY}\n      secret-access-key: {SECRET_KEY}\n",
            db.display()
        );
        let (child, socket) = start_with_socket(dir.path(), &body);
        let points = synced_points(&conn, &db, &socket, &mut seeded(40 + i as u64), 5);
        let log = stop(child);
        assert!(!log.contains("unsupported"), "{kind}: a conditional write was attempted:\n{log}");
        for (txid, want) in &points {
            let out = dir.path().join(format!("restored-{txid}.db"));
            let mut restore = sluice();
            restore.env("ALIBABA_CLOUD_ACCESS_KEY_ID", ACCESS_KEY).env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", SECRET_KEY);
            restore.env("LITESTREAM_ACCESS_KEY_ID", ACCESS_KEY).env("LITESTREAM_SECRET_ACCESS_KEY", SECRET_KEY);
            let txid_arg = format!("{txid:016x}");
            run_ok(restore.args(["restore", "-txid", &txid_arg, "-o"]).arg(&out).arg(url));
            assert_same_image(want, &file_image(&out, PAGE), &format!("{kind} at TXID {txid}"));
        }
    }
}
