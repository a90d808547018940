//! The bundled Google Cloud Storage backend (`gs://`), written only against
//! the SDK, over GCS's JSON API. Litestream's URL form `gs://BUCKET/PATH`;
//! objects are named `PATH/KEY` in the bucket.
//!
//! - Authentication (`auth.rs`): the credentials file Google's libraries
//!   read (Application Default Credentials), handed over by the host as the
//!   secret setting `credentials-json`, since a plugin reads no files and no
//!   environment. A `service_account` key signs a JWT (RS256) that
//!   `token_uri` trades for an access token; an `authorized_user` file
//!   (`gcloud auth application-default login`) trades its refresh token.
//!   Either way: one token request per plugin instance, on its first
//!   call, as instances live for one batch of calls, and again five
//!   minutes before the token expires (an hour), as a warm instance
//!   reused sync after sync can outlive it. Without credentials requests
//!   go unauthenticated, as Google's libraries do against an emulator
//!   (`STORAGE_EMULATOR_HOST`).
//! - Conditional writes: the object's generation is its ETag (it changes
//!   on every write, and GCS compares it atomically): if-absent is
//!   `ifGenerationMatch=0`, if-match is `ifGenerationMatch=ETAG`.
//! - Puts are single `multipart` uploads (the metadata and the data in one
//!   request, so a segment costs one call).
//! - Large objects: GCS has no multipart upload; each part is uploaded as
//!   a temporary object under `PATH/.sluice-upload/`, and completion
//!   composes them (at most 32 per compose, so longer uploads compose in a
//!   chain) into the final object, where the precondition and metadata
//!   apply; then the temporaries are deleted (abort deletes them too).
//!   Listings never show them.

pub mod auth;
pub mod listing;
pub mod location;
pub mod upload;

#[cfg(target_arch = "wasm32")]
mod backend;

/// Largest single put: the plugin holds it and its `multipart/related`
/// body (a second copy) in memory, within the sandbox's 256 MiB default.
pub const MAX_PUT_SIZE: u64 = 32 << 20;
/// Smallest part the host should send: keeps the temporary objects (one
/// request each, and one compose per 31) few for large snapshots.
pub const MIN_PART_SIZE: u64 = 1 << 20;
/// Largest part, held whole in memory (sent as it is, no second copy).
pub const MAX_PART_SIZE: u64 = 64 << 20;
/// Parts per upload: GCS itself has no limit on a composite's
/// components; this bounds the composes of one completion (one per 31
/// parts) and the upload's temporaries.
pub const MAX_PARTS: u32 = 10_000;
/// Source objects one `compose` takes (GCS's limit).
pub const MAX_COMPOSE: usize = 32;
/// Keys per delete call (one request each) and per list page (GCS's own
/// `maxResults` maximum is 1000).
pub const MAX_BATCH: u32 = 1000;
/// Google's service, when no `endpoint` names another.
pub const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";
/// Where credentials files that do not say otherwise get their tokens.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The token's scope: objects read and written, no bucket administration.
pub const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";
/// The directory, below the replica's path, of the temporary objects of
/// uploads in progress (never listed as keys).
pub const UPLOAD_DIR: &str = ".sluice-upload/";
