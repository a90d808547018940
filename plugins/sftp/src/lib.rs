//! The bundled SFTP backend (`sftp://user@host[:port]/path`): objects are
//! files below the URL's directory on an SSH server, laid out as
//! Litestream's SFTP replicas are (`path/KEY`). Written only against the
//! SDK: SSH is russh (pure Rust) over a `std::net::TcpStream`
//! (wasi:sockets, granted by `needs-sockets` and confined by the host to
//! the URL's server), SFTP is russh-sftp, both on a tokio current-thread
//! runtime inside the component.
//!
//! - A put writes a temporary file beside the target, syncs it
//!   (`fsync@openssh.com`) and renames it into place
//!   (`posix-rename@openssh.com`, atomic), so a reader never sees part of
//!   an object. A put cut short leaves a `*.sluice-tmp-*` file that
//!   listings skip and retention's deletes in its directory remove once
//!   it is `STALE_TEMP_SECS` old.
//! - No conditional writes (SFTP cannot compare and replace atomically)
//!   and no multipart: an object must fit one put (`MAX_PUT_SIZE`); the
//!   host stores larger segments in parts.
//! - The server's key is checked against `host-key` when it is set
//!   (Litestream accepts any key without it; so does this plugin, with a
//!   warning).
//! - Authentication by key (`key-path`, which sluice reads and hands over
//!   as `key`) and by password, as Litestream's.

pub mod location;

#[cfg(target_arch = "wasm32")]
mod backend;
#[cfg(target_arch = "wasm32")]
mod files;
#[cfg(target_arch = "wasm32")]
mod session;
#[cfg(target_arch = "wasm32")]
mod socket;

/// Largest object: one put, held whole in the plugin's memory (the
/// sandbox's default is 256 MiB) while it is written.
pub const MAX_PUT_SIZE: u64 = 64 << 20;
/// Keys per delete call and per list page.
pub const MAX_BATCH: u32 = 1000;
/// Bytes per SFTP read or write request: 32 KiB is what every server
/// must accept (OpenSSH takes more, others do not).
pub const CHUNK: usize = 32 << 10;
/// Requests in flight for one file: 64 × 32 KiB = 2 MiB, russh's channel
/// window, so the pipe stays full without waiting on the window.
pub const IN_FLIGHT: usize = 64;
/// Age past which a temporary file is a put cut short, not one in
/// progress: a put is at most 64 MiB, minutes on the slowest link a
/// replica can keep up on.
pub const STALE_TEMP_SECS: u64 = 3600;
/// How often a directory's temporary files are looked for again by an
/// instance that lives on (a busy replica's warm instance): a listing per
/// directory every ten minutes.
pub const SWEEP_EVERY_SECS: u64 = 600;
/// How long connecting, the SSH handshake and logging in may take before
/// the call fails (transient, retried).
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
/// How long one SFTP request may wait for its answer: a dead server fails
/// a call (transient, retried) instead of hanging it.
pub const REQUEST_TIMEOUT_SECS: u64 = 30;
