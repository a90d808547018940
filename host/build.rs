//! Builds the bundled plugins for `wasm32-wasip2` and hands their paths to
//! the host crate, which embeds them. A nested cargo with its own target
//! directory avoids contending for the outer build's lock.

use sha2::{Digest, Sha256};
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Bundled plugins: (package, env var carrying the built component's path).
const BUNDLED: &[(&str, &str)] = &[
    ("sluice-plugin-file", "SLUICE_PLUGIN_FILE_WASM"),
    ("sluice-plugin-s3", "SLUICE_PLUGIN_S3_WASM"),
    ("sluice-plugin-webdav", "SLUICE_PLUGIN_WEBDAV_WASM"),
    ("sluice-plugin-abs", "SLUICE_PLUGIN_ABS_WASM"),
    ("sluice-plugin-gs", "SLUICE_PLUGIN_GS_WASM"),
    ("sluice-plugin-nats", "SLUICE_PLUGIN_NATS_WASM"),
    ("sluice-plugin-sftp", "SLUICE_PLUGIN_SFTP_WASM"),
];

const WASM_TARGET: &str = "wasm32-wasip2";

/// Functions a replicating and restoring sluice runs, hottest first,
/// written by `tests/bench/symbol-order.sh`. The linker lays them out
/// together at the start of `.text`. Without it the ~2 MB of code that runs
/// is spread over the whole 13 MB section, and the kernel maps a binary's
/// pages 64 KiB at a time around each fault, so nearly all of it became
/// resident: 9.4 MB of text against 2.8 MB ordered, side by side.
const SYMBOL_ORDER: &str = "symbol-order.txt";
/// The only target whose default linker (rust-lld, since Rust 1.90) is known
/// to take `--symbol-ordering-file`; GNU ld would reject it.
const SYMBOL_ORDER_TARGET: &str = "x86_64-unknown-linux-gnu";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir.parent().expect("host/ lives in the workspace root").to_path_buf();
    for watched in ["plugins", "sdk", "wit", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", workspace.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=SLUICE_PLUGIN_TARGET_DIR");
    order_symbols(&manifest_dir);

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
    for var in
        ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER"]
    {
        cmd.env_remove(var);
    }
    let output = cmd.output().expect("could not run cargo to build the bundled plugins");
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("may not be installed")
            || stderr.contains("can't find crate for `core`")
            || stderr.contains("can't find crate for `std`")
        {
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
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("cargo built {package} but {} is unreadable: {e}", path.display()));
        println!("cargo:rustc-env={var}={}", path.display());
        // The compile cache is keyed by this digest. Taken here, a start with
        // a warm cache never reads the embedded bytes, which would otherwise
        // be paged in just to be hashed.
        println!("cargo:rustc-env={var}_SHA256={}", hex::encode(Sha256::digest(&bytes)));
    }
}

/// Lay out the functions that run together, in optimised builds for the
/// target whose linker is known to accept an ordering file. Names missing
/// from the binary (the list ages as code and dependencies change) are
/// skipped silently: a stale list costs memory, never a failed build.
/// `SLUICE_SYMBOL_ORDER=0` turns it off, e.g. with a user-chosen linker.
fn order_symbols(manifest_dir: &Path) {
    println!("cargo:rerun-if-env-changed=SLUICE_SYMBOL_ORDER");
    let order = manifest_dir.join(SYMBOL_ORDER);
    println!("cargo:rerun-if-changed={}", order.display());
    let optimised = env::var("PROFILE").is_ok_and(|p| p == "release");
    let lld_target = env::var("TARGET").is_ok_and(|t| t == SYMBOL_ORDER_TARGET);
    let opted_out = env::var("SLUICE_SYMBOL_ORDER").is_ok_and(|v| v == "0");
    let own_linker = env::var("CARGO_ENCODED_RUSTFLAGS").is_ok_and(|f| f.contains("linker"));
    if optimised && lld_target && !opted_out && !own_linker && order.exists() {
        println!("cargo:rustc-link-arg-bin=sluice=-Wl,--symbol-ordering-file={}", order.display());
        println!("cargo:rustc-link-arg-bin=sluice=-Wl,--no-warn-symbol-ordering");
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
