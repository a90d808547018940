//! The bundled WebDAV backend (`webdav://`, `webdavs://`), written only
//! against the SDK: objects are files below the replica's collection,
//! created with their parent collections (MKCOL) on first write, listed
//! with PROPFIND (depth 1, one collection at a time: servers often refuse
//! depth infinity).
//!
//! Not offered, and said so in `plugin info`: conditional writes (a
//! server's ETag is often built from a modification time in whole
//! seconds, so two writes in one second can share one, and compare-and-
//! swap on it would be unsound), and multipart uploads (WebDAV has no way
//! to join parts on the server): an object must fit one PUT,
//! `MAX_PUT_SIZE`. Metadata lives in a sidecar file beside the object
//! (`.sluice-meta.NAME`, never listed), tied to the object's ETag so that
//! an overwrite without metadata does not inherit stale values.

pub mod location;
pub mod multistatus;

#[cfg(target_arch = "wasm32")]
mod backend;

/// Largest object: one PUT, held whole in the plugin's memory (the
/// sandbox's default is 256 MiB). Larger snapshots need a store with
/// multipart uploads.
pub const MAX_PUT_SIZE: u64 = 128 << 20;
/// Setting: the largest PUT the server takes, for a server (or the proxy
/// in front of it: nginx's `client_max_body_size` is 1 MiB by default)
/// that refuses large bodies. Larger segments the host stores in parts.
pub const MAX_PUT_SETTING: &str = "webdav-max-put-size";
/// The smallest `webdav-max-put-size` taken: below it a snapshot would be
/// thousands of objects.
pub const MIN_PUT_SIZE: u64 = 64 << 10;

/// The largest PUT: `MAX_PUT_SIZE`, or less as `webdav-max-put-size`
/// (bytes) says.
pub fn max_put_size(setting: Option<&str>) -> Result<u64, String> {
    let Some(text) = setting else { return Ok(MAX_PUT_SIZE) };
    match text.trim().parse::<u64>() {
        Ok(n) if (MIN_PUT_SIZE..=MAX_PUT_SIZE).contains(&n) => Ok(n),
        _ => Err(format!(
            "{MAX_PUT_SETTING} must be a number of bytes from {MIN_PUT_SIZE} to {MAX_PUT_SIZE}, got `{text}`"
        )),
    }
}

/// Keys per delete call and per list page.
pub const MAX_BATCH: u32 = 1000;
/// Prefix of this plugin's own files (metadata sidecars), never listed.
pub const OWN_PREFIX: &str = ".sluice-";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_put_limit_is_the_setting_within_bounds() {
        assert_eq!(max_put_size(None), Ok(MAX_PUT_SIZE));
        assert_eq!(max_put_size(Some("1048576")), Ok(1 << 20));
        for bad in ["1MiB", "", "-1", "1000", "999999999999"] {
            let e = max_put_size(Some(bad)).expect_err(bad);
            assert!(e.contains(MAX_PUT_SETTING) && e.contains(bad), "{e}");
        }
    }
}
