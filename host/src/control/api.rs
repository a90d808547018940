//! The control socket's requests and responses: Litestream 0.5's JSON, as
//! its CLI and scripts send and read it (field names checked against
//! Litestream 0.5.17 in `tests/control.rs`).

use serde::{Deserialize, Serialize};

/// Default wait of `start`, `stop`, `sync`, `register` and `unregister`,
/// in seconds (Litestream's).
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// Default wait of `info` and `list`, in seconds (Litestream's).
pub const DEFAULT_QUERY_TIMEOUT_SECS: u64 = 10;

/// `POST /start`, `/stop`, `/unregister`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PathRequest {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

/// `POST /sync`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SyncRequest {
    pub path: String,
    #[serde(default)]
    pub wait: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

/// `POST /register`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub path: String,
    pub replica_url: String,
}

/// The answer of `start`, `stop`, `register`, `unregister` (`txid`
/// absent for `register`, as in Litestream).
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusResponse {
    pub status: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txid: Option<u64>,
}

/// The answer of `sync`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SyncResponse {
    /// `synced` when the sync captured something new, else `no_change`.
    pub status: String,
    pub path: String,
    pub txid: u64,
    /// The lowest TXID every replica holds (after waiting, with `wait`).
    pub replicated_txid: u64,
}

/// `GET /txid?path=`.
#[derive(Debug, Serialize, Deserialize)]
pub struct TxidResponse {
    pub txid: u64,
}

/// `GET /info`.
#[derive(Debug, Serialize, Deserialize)]
pub struct InfoResponse {
    pub version: String,
    pub pid: u32,
    pub uptime_seconds: u64,
    pub started_at: String,
    pub database_count: usize,
}

/// `GET /list`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ListResponse {
    pub databases: Vec<DatabaseSummary>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DatabaseSummary {
    pub path: String,
    /// `replicating`, `stopped`, or `waiting` (for the database to exist
    /// or to open).
    pub status: String,
    /// When a replica last stored something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_at: Option<String>,
}

/// Any failure.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}
