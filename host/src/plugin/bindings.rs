//! Host-side bindings generated from `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "sluice:storage/plugin@0.1.0",
    // Exports are async so a plugin blocked on `wasi:http` yields the
    // thread instead of pinning it.
    exports: { default: async },
});

pub use sluice::storage::types::{
    ByteRange, Capabilities, DeleteFailure, Error as WitError, ListPage, ObjectMeta, PluginInfo, Precondition,
    PutOptions, StoreConfig, UploadedPart,
};
