//! The bundled Azure Blob Storage backend (`abs://`), written only against
//! the SDK. Litestream's URL form `abs://[ACCOUNT@]CONTAINER/PATH` and its
//! settings `account-name`, `account-key`, `sas-token`, `endpoint` and
//! `bucket` (the container). Objects are block blobs named
//! `PATH/KEY` in the container.
//!
//! - Authentication: Shared Key (the account key signs every request,
//!   `sign.rs`) or a SAS token appended to every URL.
//! - Conditional writes: `If-None-Match: *` and `If-Match: ETAG`, which
//!   Azure enforces atomically with strong ETags.
//! - Large objects: blocks (`Put Block`) committed by `Put Block List`;
//!   the precondition and metadata travel in the upload id
//!   (`upload.rs`), as the contract gives them only to `create-upload`.
//!   Blocks of an abandoned upload are never committed, and Azure drops
//!   uncommitted blocks by itself after a week: abort has nothing to free.
//! - Integrity: every body sent carries its `Content-MD5`, which Azure
//!   checks before it stores anything.
//! - Metadata: Azure wants C# identifiers as names, so the contract's
//!   `lower-case-with-dashes` keys are stored as `s_lower_case_with_dashes`.

pub mod listing;
pub mod location;
pub mod sign;
pub mod upload;

#[cfg(target_arch = "wasm32")]
mod backend;

/// Largest single `Put Blob`: the object is held whole in the plugin's
/// memory (the sandbox's default is 256 MiB); larger objects go as blocks.
pub const MAX_PUT_SIZE: u64 = 64 << 20;
/// Smallest block the host should send: keeps the block count of a large
/// snapshot far below `MAX_PARTS`.
pub const MIN_PART_SIZE: u64 = 1 << 20;
/// Largest block, held whole in memory like a put.
pub const MAX_PART_SIZE: u64 = 64 << 20;
/// Azure's limit of committed blocks per blob.
pub const MAX_PARTS: u32 = 50_000;
/// Keys per delete call (one request each) and per list page (Azure's
/// own maximum is 5000).
pub const MAX_BATCH: u32 = 1000;
/// The REST API version spoken: the first with 5000 MiB puts and blocks,
/// served by Azure and by Azurite.
pub const API_VERSION: &str = "2021-08-06";
