//! The bundled NATS backend (`nats://`): objects in a JetStream object
//! store bucket, laid out as nats.go and nats.py lay them out so that
//! `nats object get` reads what sluice wrote. Written only against the
//! SDK; it speaks the NATS client protocol itself over a blocking
//! `std::net::TcpStream` (wasi:sockets, granted by `needs-sockets` and
//! confined by the host to the replica URL's server).
//!
//! Layout (stream `OBJ_<bucket>`):
//! - chunks of at most 128 KiB on `$O.<bucket>.C.<nuid>`, a fresh nuid per
//!   version of an object;
//! - one meta record (JSON) per object on `$O.<bucket>.M.<base64url(name)>`,
//!   published with `Nats-Rollup: sub` so only the newest stays; a delete
//!   is a meta record with `deleted: true`.
//!
//! The meta record is the commit point: chunks are written first, the
//! meta last, so a put is atomic. Its stream sequence is the etag, and
//! conditional puts publish it with `Nats-Expected-Last-Subject-Sequence`,
//! which JetStream checks atomically. No multipart: an object must fit
//! one put (`MAX_PUT_SIZE`), held whole in the plugin's memory (the host
//! stores larger segments in parts).
//!
//! Authentication as Litestream's: user/password, token, or a user's NKey
//! seed (`seed`, with a user JWT as `jwt`) that signs the nonce of the
//! server's INFO (`nkeys`, pure Rust); a `creds` file's JWT and seed
//! (the host reads the file and passes its text as `creds-text`).

pub mod js;
pub mod location;
pub mod object;
pub mod proto;

#[cfg(target_arch = "wasm32")]
mod backend;
#[cfg(target_arch = "wasm32")]
mod bucket;
#[cfg(target_arch = "wasm32")]
mod client;

/// Largest object: one put, held whole in the plugin's memory (the
/// sandbox's default is 256 MiB) while its chunks are published.
pub const MAX_PUT_SIZE: u64 = 64 << 20;
/// Keys per delete call and per list page.
pub const MAX_BATCH: u32 = 1000;
/// The object store's chunk size (nats.go's and nats.py's default).
pub const CHUNK_SIZE: usize = 128 << 10;
/// How long one read from the server may block: a dead server fails a call
/// (transient, retried) instead of hanging it.
pub const READ_TIMEOUT_SECS: u64 = 20;
