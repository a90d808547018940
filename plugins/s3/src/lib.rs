//! The bundled S3 backend: Amazon S3 and S3-compatible stores (MinIO,
//! SeaweedFS, R2, B2, Spaces, ...), signed with SigV4 inside the plugin and
//! sent over `wasi:http`, so the host's allowlist confines it.
//!
//! The pure parts (URL and provider parsing, XML, error mapping) build on
//! any target so their tests run natively; the rest only in WebAssembly.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod encode;
mod errors;
mod handle;
mod provider;
mod sse;
mod time;
mod url;
mod xml;

#[cfg(target_arch = "wasm32")]
mod backend;
#[cfg(target_arch = "wasm32")]
mod client;
#[cfg(target_arch = "wasm32")]
mod sign;

#[cfg(target_arch = "wasm32")]
sluice_sdk::export_backend!(backend::S3Backend);
