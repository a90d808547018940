//! Client-side encryption (`age:` on a replica, DESIGN.md decision 20)
//! end to end: the real `sluice` binary replicates a database written by
//! this test process (another process) to two file replicas of one
//! config, one encrypted and one not. The file plugin stores exactly the
//! bytes it is handed, so the replica's files are what a plugin and its
//! store see; the plain replica beside it shows that the checks below do
//! find plaintext when it is there.

mod common;

use age::secrecy::ExposeSecret;
use common::*;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// Written into rows between random text, so some copy of it is stored
/// literally by zstd in a plaintext segment.
const MARKER: &str = "sluice-plaintext-marker-7f3a";

fn keypair() -> (String, String) {
    let id = age::x25519::Identity::generate();
    (id.to_public().to_string(), id.to_string().expose_secret().to_string())
}

fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

fn config(dir: &Path, db: &Path, recipients: &[&str], identities: &[&str]) -> PathBuf {
    let list = |v: &[&str]| v.iter().map(|k| format!("\n            - {k}")).collect::<String>();
    let text = format!(
        "snapshot:\n  interval: 4s\nlevels:\n  - interval: 1s\ndbs:\n  - path: {db}\n    monitor-interval: 50ms\n    replicas:\n      - name: sealed\n        url: {sealed}\n        sync-interval: 100ms\n        age:\n          recipients:{r}\n          identities:{i}\n      - name: plain\n        url: {plain}\n        sync-interval: 100ms\n",
        db = db.display(),
        sealed = file_url(&dir.join("sealed")),
        plain = file_url(&dir.join("plain")),
        r = list(recipients),
        i = list(identities),
    );
    let path = dir.join("sluice.yml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Commit for `secs`: rows holding the marker and incompressible bytes,
/// and the shared random workload.
fn write_for(conn: &rusqlite::Connection, seed: u64, secs: u64) {
    let mut rng = seeded(seed);
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        conn.execute("INSERT INTO t(a, b) VALUES (?1 || hex(randomblob(8)), randomblob(700))", [MARKER]).unwrap();
        workload(conn, &mut rng, 3);
        std::thread::sleep(Duration::from_millis(60));
    }
}

/// 32-byte runs of the database's pages that are not one repeated byte:
/// any of them in a replica's bytes is plaintext.
fn page_runs(conn: &rusqlite::Connection) -> HashSet<[u8; 32]> {
    let mut stmt = conn.prepare("SELECT data FROM sqlite_dbpage").unwrap();
    let pages = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0)).unwrap();
    let mut runs = HashSet::new();
    for page in pages {
        for run in page.unwrap().chunks_exact(32) {
            if run.iter().any(|&b| b != run[0]) {
                runs.insert(<[u8; 32]>::try_from(run).unwrap());
            }
        }
    }
    runs
}

/// How many of a replica's files hold the marker, and how many 32-byte
/// windows of its bytes are runs of the database's pages.
fn plaintext_in(replica: &Path, runs: &HashSet<[u8; 32]>) -> (usize, usize) {
    let (mut marked, mut found) = (0, 0);
    for f in walk(replica) {
        let bytes = std::fs::read(&f).unwrap();
        marked += usize::from(bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()));
        found += bytes.windows(32).filter(|w| runs.contains(*w)).count();
    }
    (marked, found)
}

fn restore(config: &Path, db: &Path, out: &Path, replica: &str, txid: Option<u64>) -> Output {
    let _ = std::fs::remove_file(out);
    let mut cmd = sluice();
    cmd.args(["restore", "-config"]).arg(config).args(["-replica", replica, "-o"]).arg(out);
    if let Some(t) = txid {
        cmd.args(["-txid", &format!("{t:016x}")]);
    }
    cmd.arg(db).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The store sees ciphertext only, a restore through the keys is exact
/// (after compactions and snapshots, which decrypt and re-encrypt in the
/// host), a restore without them says what is missing, and the secret
/// key appears in no output.
#[test]
fn an_encrypted_replica_holds_no_plaintext_and_restores_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, 4096);
    let (recipient, identity) = keypair();
    let config = config(dir.path(), &db, &[&recipient], &[&identity]);
    let child = start_replicator(&config);
    write_for(&conn, 21, 7);
    let want = image(&conn);
    std::thread::sleep(Duration::from_millis(1500));
    let log = stop(child);
    assert!(!log.contains(&identity[15..]), "the secret key was logged:\n{log}");

    let runs = page_runs(&conn);
    let (marked, found) = plaintext_in(&dir.path().join("plain"), &runs);
    assert!(marked > 0 && found > 0, "the check finds no plaintext even in the plain replica ({marked}, {found})");
    let (marked, found) = plaintext_in(&dir.path().join("sealed"), &runs);
    assert_eq!((marked, found), (0, 0), "plaintext in the encrypted replica (files with the marker, page runs)");
    let sealed = walk(&dir.path().join("sealed"));
    let levels: HashSet<String> =
        sealed.iter().filter_map(|p| p.parent()?.file_name()?.to_str().map(String::from)).collect();
    assert!(levels.contains("0001") && levels.contains("0009"), "no compaction or snapshot happened: {levels:?}");

    let out = dir.path().join("out.db");
    let got = restore(&config, &db, &out, "sealed", None);
    assert!(got.status.success(), "restore failed:\n{}", text(&got));
    assert_same_image(&want, &file_image(&out, 4096), "restored from the encrypted replica");
    assert!(!text(&got).contains(&identity[15..]));

    // From the URL alone (no keys), the restore refuses and says why;
    // the listing needs no key.
    let url = file_url(&dir.path().join("sealed"));
    let _ = std::fs::remove_file(&out);
    let bare = sluice().args(["restore", "-o"]).arg(&out).arg(&url).output().unwrap();
    assert!(!bare.status.success(), "restored an encrypted replica without keys:\n{}", text(&bare));
    assert!(text(&bare).contains("encrypted"), "does not say the replica is encrypted:\n{}", text(&bare));
    assert!(!out.exists(), "a refused restore left {}", out.display());
    assert!(replica_txid(&url) > 0);
}

/// Rotating keys: new segments go to the new recipient while the old
/// identity still reads the old ones; once a snapshot under the new key
/// exists, the latest state restores with the new identity alone, and an
/// older point needs the old one, which the restore names.
#[test]
fn rotated_keys_read_old_and_new_and_a_wrong_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let conn = create_db(&db, 4096);
    let ((old_r, old_i), (new_r, new_i)) = (keypair(), keypair());
    let first = config(dir.path(), &db, &[&old_r], &[&old_i]);
    let child = start_replicator(&first);
    write_for(&conn, 5, 3);
    std::thread::sleep(Duration::from_millis(800));
    stop(child);
    let url = file_url(&dir.path().join("sealed"));
    let before = replica_txid(&url);
    let early = image(&conn);

    let both = config(dir.path(), &db, &[&new_r], &[&old_i, &new_i]);
    let child = start_replicator(&both);
    // Past the 4 s snapshot interval, so a snapshot under the new key lands.
    write_for(&conn, 6, 6);
    let want = image(&conn);
    std::thread::sleep(Duration::from_millis(1500));
    stop(child);
    let out = dir.path().join("out.db");
    let got = restore(&both, &db, &out, "sealed", None);
    assert!(got.status.success(), "restore with both identities failed:\n{}", text(&got));
    assert_same_image(&want, &file_image(&out, 4096), "latest, old and new identities");
    let got = restore(&both, &db, &out, "sealed", Some(before));
    assert!(got.status.success(), "early restore with both identities failed:\n{}", text(&got));
    assert_same_image(&early, &file_image(&out, 4096), "before the rotation");

    let only_new = config(dir.path(), &db, &[&new_r], &[&new_i]);
    let got = restore(&only_new, &db, &out, "sealed", None);
    assert!(got.status.success(), "latest needs only the new key after a snapshot:\n{}", text(&got));
    assert_same_image(&want, &file_image(&out, 4096), "latest, new identity only");
    let got = restore(&only_new, &db, &out, "sealed", Some(before));
    assert!(!got.status.success(), "an old point restored without the old key");
    assert!(text(&got).contains("other age recipients"), "the missing key is not named:\n{}", text(&got));
    assert!(!text(&got).contains(&new_i[15..]) && !text(&got).contains(&old_i[15..]));
}
