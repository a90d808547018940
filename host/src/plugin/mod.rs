//! Loading and confining storage plugins (WebAssembly components).
//!
//! `runtime` owns the engine and compiles components (with `cache`);
//! `sandbox` defines what an instance may touch, `http` carries its
//! requests and `rate` paces them; `instance` is one live instance's typed calls; `store` is what
//! the rest of sluice uses: one replica's store, opened on demand.

mod bindings;
pub mod bundled;
mod cache;
mod compat;
pub mod conformance;
mod error;
mod http;
mod instance;
pub mod rate;
mod repeats;
mod replica_url;
pub mod retry;
mod runtime;
pub mod sandbox;
mod settings;
mod sockets;
mod stderr;
mod store;

pub use bindings::CONTRACTS;
pub use bindings::{
    ByteRange, Capabilities, DeleteFailure, ListPage, ObjectMeta, PluginInfo, Precondition, PutOptions, Setting,
    UploadedPart,
};
pub use cache::{CACHE_DIR_ENV, CACHE_ENABLE_ENV, default_cache_dir};
pub use error::{ErrorKind, Labels, PluginError, StorageError};
pub use instance::Instance;
pub use replica_url::{normalize_url, redact_url};
pub use runtime::{LoadedPlugin, MAX_LIVE_INSTANCES, Runtime};
pub use sandbox::{Sandbox, SandboxConfig};
pub use store::{PART_SIZE, PluginStore, SMALL_IO_BYTES, WARM_IDLE, largest_single_put, part_size};
