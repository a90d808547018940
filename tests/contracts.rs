//! The plugin contract's versions (decision 34): a plugin built against
//! the first released contract keeps replicating and restoring, released
//! contracts never change, and a plugin of the current one is given only
//! the settings it declares.

mod common;

use common::*;
use std::path::{Path, PathBuf};

const PAGE: u32 = 4096;

/// The bundled `file` plugin as built against `sluice:storage@0.1.0`
/// (commit 2f0e6bb; see tests/plugins/released/README.md).
fn file_plugin_0_1_0() -> PathBuf {
    workspace().join("tests/plugins/released/file-contract-0.1.0.wasm")
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn a_plugin_built_against_contract_0_1_0_replicates_and_restores() {
    let wasm = file_plugin_0_1_0();
    let info = text(&run_ok(sluice().args(["plugin", "info"]).arg(&wasm)));
    assert!(info.contains("contract:          sluice:storage@0.1.0"), "{info}");
    assert!(info.contains("settings:          not declared"), "{info}");

    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let check = text(&run_ok(sluice().args(["plugin", "check", "--plugin"]).arg(&wasm).arg(&url)));
    assert!(check.contains("0 failed"), "{check}");
    std::fs::remove_dir_all(&replica).unwrap();

    let db = dir.path().join("app.db");
    let conn = create_db(&db, PAGE);
    let body =
        format!("dbs:\n  - path: {}\n    replica:\n      url: {url}\n      plugin: {}\n", db.display(), wasm.display());
    let (child, socket) = start_with_socket(dir.path(), &body);
    let points = synced_points(&conn, &db, &socket, &mut seeded(34), 4);
    stop(child);
    for (txid, want) in &points {
        let out = dir.path().join(format!("restored-{txid}.db"));
        let txid_arg = format!("{txid:016x}");
        run_ok(sluice().args(["restore", "-plugin"]).arg(&wasm).args(["-txid", &txid_arg, "-o"]).arg(&out).arg(&url));
        let got = file_image(&out, PAGE);
        assert_same_image(want, &got, &format!("TXID {txid} through the 0.1.0 plugin"));
    }
}

/// `wit/released/` holds each released contract verbatim: a change to
/// one would break every plugin built against it.
#[test]
fn released_contracts_are_never_changed() {
    use sha2::{Digest, Sha256};
    let released: &[(&str, &str)] = &[("0.1.0", "c631b5d822bd125e620e774498b3eff628a9e6a3a09b9b732cdddc589bdf724b")];
    for (version, sha256) in released {
        let path = workspace().join(format!("wit/released/{version}/storage.wit"));
        let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(hex::encode(Sha256::digest(&text)), *sha256, "{} was edited in place", path.display());
    }
}

#[test]
fn a_plugin_lists_its_settings_and_a_replica_setting_it_does_not_read_is_named() {
    let info = text(&run_ok(sluice().args(["plugin", "info", "webdav"])));
    assert!(info.contains("contract:          sluice:storage@0.2.0"), "{info}");
    let password = info.lines().find(|l| l.trim_start().starts_with("webdav-password")).unwrap_or_default();
    assert!(password.ends_with("(secret)"), "{info}");
    let json = run_ok(sluice().args(["plugin", "info", "--json", "s3"]));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let names: Vec<&str> = v["settings"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"secret-access-key") && names.contains(&"force-path-style"), "{v}");

    // `file` reads no settings: a typo, or a key meant for another store,
    // is named once and not passed; the replica still works.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("replica").display());
    let out = run_ok(sluice().args(["plugin", "check", "-s", "regoin=x", "-s", "secret-access-key=S"]).arg(&url));
    let all = text(&out);
    assert!(all.contains("0 failed"), "{all}");
    let warned: Vec<&str> = all.lines().filter(|l| l.contains("not passed")).collect();
    assert_eq!(warned.len(), 1, "{all}");
    assert!(warned[0].contains("`regoin`, `secret-access-key`") && warned[0].contains("it reads: none"), "{all}");
    assert!(!all.contains("=S"), "a setting's value reached the log:\n{all}");
}

fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}
