//! Building the hostile test plugin, shared by tests/plugins.rs and the
//! plugin-boundary benchmark (included with `#[path]`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ is inside the workspace").to_path_buf()
}

/// Where the hostile plugin is built (and compiled components cached).
pub fn test_target() -> PathBuf {
    workspace().join("target").join("test-plugins")
}

/// Build the hostile plugin once per process and return its path.
pub fn hostile_wasm() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        let cargo =
            std::env::var("CARGO").ok().or(option_env!("CARGO").map(String::from)).unwrap_or_else(|| "cargo".into());
        let target_dir = test_target();
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace())
            .args(["build", "-p", "sluice-plugin-hostile", "--target", "wasm32-wasip2", "--profile", "plugin"])
            .arg("--target-dir")
            .arg(&target_dir);
        // Host flags (coverage, sanitizers, target-cpu) make no sense for wasm.
        for var in [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_BUILD_RUSTFLAGS",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
        ] {
            cmd.env_remove(var);
        }
        let output = cmd.output().expect("could not run cargo to build the hostile plugin");
        assert!(
            output.status.success(),
            "building the hostile plugin failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let path = target_dir.join("wasm32-wasip2").join("plugin").join("sluice_plugin_hostile.wasm");
        assert!(path.exists(), "cargo built the hostile plugin but {} is missing", path.display());
        path
    })
}
