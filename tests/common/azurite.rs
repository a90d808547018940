//! An Azurite blob server (`npm install azurite`) on 127.0.0.1 for the
//! Azure Blob Storage tests, with the emulator's well-known account.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

pub const ACCOUNT: &str = "devstoreaccount1";
/// The emulator's published development key (not a secret).
pub const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// One `npm install` at a time.
static NPM: Mutex<()> = Mutex::new(());

/// A running azurite-blob keeping its data in a temporary directory,
/// stopped when dropped.
pub struct Azurite {
    pub port: u16,
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Azurite {
    pub fn start() -> Azurite {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = azurite_blob()
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--skipApiVersionCheck", "--silent"])
            .arg("--location")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start azurite-blob");
        let server = Azurite { port, child, dir };
        super::wait_for_port(port, "azurite-blob", Duration::from_secs(60));
        server
    }

    /// The service endpoint, path style.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// Create a container (signed by tests/abs/create-container.js).
    pub fn create_container(&self, name: &str) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/abs/create-container.js");
        let out = Command::new("node").arg(script).arg(self.port.to_string()).arg(name).output().expect("run node");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// An account SAS token for the blob service, signed with the key
    /// (tests/abs/account-sas.js).
    pub fn sas_token(&self) -> String {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/abs/account-sas.js");
        let out = Command::new("node").arg(script).output().expect("run node");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// `abs://ACCOUNT@CONTAINER/PATH?endpoint=...`; the key comes from
    /// `LITESTREAM_AZURE_ACCOUNT_KEY` (see `with_key`).
    pub fn url(&self, container: &str, path: &str) -> String {
        format!("abs://{ACCOUNT}@{container}/{path}?endpoint={}", self.endpoint())
    }
}

/// A command given the account key as Litestream users give it.
pub fn with_key(cmd: &mut Command) -> &mut Command {
    cmd.env("LITESTREAM_AZURE_ACCOUNT_KEY", KEY)
}

/// `azurite-blob` from PATH, else installed from npm under target/azurite
/// on first use (as the S3 tests install SeaweedFS).
fn azurite_blob() -> Command {
    if Command::new("azurite-blob").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Command::new("azurite-blob");
    }
    let prefix = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/azurite");
    let bin = prefix.join("node_modules/.bin/azurite-blob");
    let _one_at_a_time = NPM.lock().unwrap_or_else(|e| e.into_inner());
    if !bin.exists() {
        let out = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg("azurite@3")
            .output()
            .expect("run npm (Node.js is needed for Azurite: apt-get install nodejs npm)");
        assert!(
            out.status.success() && bin.exists(),
            "cannot install Azurite from npm (npm install --prefix {} azurite): {}",
            prefix.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Command::new(bin)
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
