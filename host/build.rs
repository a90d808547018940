//! Builds the bundled plugins for `wasm32-wasip2` and hands their paths to
//! the host crate, which embeds them. A nested cargo with its own target
//! directory avoids contending for the outer build's lock.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Bundled plugins: (package, env var carrying the built component's path).
const BUNDLED: &[(&str, &str)] = &[
    ("sluice-plugin-file", "SLUICE_PLUGIN_FILE_WASM"),
    ("sluice-plugin-s3", "SLUICE_PLUGIN_S3_WASM"),
];

const WASM_TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir.parent().expect("host/ lives in the workspace root").to_path_buf();
    for watched in ["plugins", "sdk", "wit", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", workspace.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=SLUICE_PLUGIN_TARGET_DIR");

    let target_dir = env::var_os("SLUICE_PLUGIN_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| outer_target_dir(&workspace).join("wasm-plugins"));
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());

    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&workspace)
        .args(["build", "--profile", "plugin", "--target", WASM_TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    for (package, _) in BUNDLED {
        cmd.args(["-p", package]);
    }
    // Host flags (coverage, sanitizers, target-cpu) make no sense for wasm.
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER"] {
        cmd.env_remove(var);
    }
    let output = cmd.output().expect("could not run cargo to build the bundled plugins");
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("may not be installed") || stderr.contains("can't find crate for `core`") || stderr.contains("can't find crate for `std`") {
            panic!(
                "\n\nThe `{WASM_TARGET}` Rust target is not installed; sluice's bundled plugins need it.\n\
                 Install it with:\n\n    rustup target add {WASM_TARGET}\n\nthen build again.\n\n"
            );
        }
        panic!("building the bundled plugins failed:\n{stderr}");
    }
    for (package, var) in BUNDLED {
        let file = format!("{}.wasm", package.replace('-', "_"));
        let path = target_dir.join(WASM_TARGET).join("plugin").join(file);
        assert!(path.exists(), "cargo built {package} but {} is missing", path.display());
        println!("cargo:rustc-env={var}={}", path.display());
    }
}

/// The outer build's target directory, found from OUT_DIR
/// (`<target>/<profile>/build/<pkg>-<hash>/out`) so a custom
/// `CARGO_TARGET_DIR` is honoured.
fn outer_target_dir(workspace: &Path) -> PathBuf {
    if let Some(dir) = env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    env::var_os("OUT_DIR")
        .map(PathBuf::from)
        .and_then(|out| out.ancestors().nth(4).map(Path::to_path_buf))
        .unwrap_or_else(|| workspace.join("target"))
}
