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
/// Keys per delete call and per list page.
pub const MAX_BATCH: u32 = 1000;
/// Prefix of this plugin's own files (metadata sidecars), never listed.
pub const OWN_PREFIX: &str = ".sluice-";
