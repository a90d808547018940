//! Plugins compiled into the binary by `build.rs`.

/// Names of the bundled plugins, in the order `plugin export` writes them.
pub const NAMES: &[&str] = &["file", "s3"];

static FILE: &[u8] = include_bytes!(env!("SLUICE_PLUGIN_FILE_WASM"));
static S3: &[u8] = include_bytes!(env!("SLUICE_PLUGIN_S3_WASM"));

/// The component bytes of a bundled plugin.
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    match name {
        "file" => Some(FILE),
        "s3" => Some(S3),
        _ => None,
    }
}

/// Which bundled plugin serves a replica URL's scheme (plain paths are files).
pub fn for_url(url: &str) -> Option<&'static str> {
    match url.split_once("://").map(|(scheme, _)| scheme) {
        None | Some("file") => Some("file"),
        Some("s3") => Some("s3"),
        _ => None,
    }
}
