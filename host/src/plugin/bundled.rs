//! Plugins compiled into the binary by `build.rs`.

/// Names of the bundled plugins, in the order `plugin export` writes them.
pub const NAMES: &[&str] = &["file", "s3", "webdav", "abs", "gs", "nats", "sftp"];

static FILE: &[u8] = include_bytes!(env!("SLUICE_PLUGIN_FILE_WASM"));
static S3: &[u8] = include_bytes!(env!("SLUICE_PLUGIN_S3_WASM"));
static WEBDAV: &[u8] = include_bytes!(env!("SLUICE_PLUGIN_WEBDAV_WASM"));
static ABS: &[u8] = include_bytes!(env!("SLUICE_PLUGIN_ABS_WASM"));
static GS: &[u8] = include_bytes!(env!("SLUICE_PLUGIN_GS_WASM"));
static NATS: &[u8] = include_bytes!(env!("SLUICE_PLUGIN_NATS_WASM"));
static SFTP: &[u8] = include_bytes!(env!("SLUICE_PLUGIN_SFTP_WASM"));

/// The component bytes of a bundled plugin.
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    match name {
        "file" => Some(FILE),
        "s3" => Some(S3),
        "webdav" => Some(WEBDAV),
        "abs" => Some(ABS),
        "gs" => Some(GS),
        "nats" => Some(NATS),
        "sftp" => Some(SFTP),
        _ => None,
    }
}

/// The SHA-256 of a bundled plugin's bytes (hex), taken at build time.
pub fn sha256(name: &str) -> Option<&'static str> {
    match name {
        "file" => Some(env!("SLUICE_PLUGIN_FILE_WASM_SHA256")),
        "s3" => Some(env!("SLUICE_PLUGIN_S3_WASM_SHA256")),
        "webdav" => Some(env!("SLUICE_PLUGIN_WEBDAV_WASM_SHA256")),
        "abs" => Some(env!("SLUICE_PLUGIN_ABS_WASM_SHA256")),
        "gs" => Some(env!("SLUICE_PLUGIN_GS_WASM_SHA256")),
        "nats" => Some(env!("SLUICE_PLUGIN_NATS_WASM_SHA256")),
        "sftp" => Some(env!("SLUICE_PLUGIN_SFTP_WASM_SHA256")),
        _ => None,
    }
}

/// Which bundled plugin serves a replica URL's scheme (plain paths are files).
pub fn for_url(url: &str) -> Option<&'static str> {
    match url.split_once("://").map(|(scheme, _)| scheme) {
        None | Some("file") => Some("file"),
        // Alibaba Cloud OSS through its S3-compatible API.
        Some("s3" | "oss") => Some("s3"),
        Some("webdav" | "webdavs") => Some("webdav"),
        Some("abs") => Some("abs"),
        Some("gs") => Some("gs"),
        Some("nats") => Some("nats"),
        Some("sftp") => Some("sftp"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn build_time_digests_match_the_embedded_bytes() {
        for name in NAMES {
            let bytes = bytes(name).expect("bundled");
            assert_eq!(sha256(name), Some(hex::encode(Sha256::digest(bytes)).as_str()), "{name}");
        }
    }
}
