//! Errors of plugin calls, each naming the plugin, database and replica.

use std::fmt;
use std::sync::Arc;

/// Who a call concerns; attached to every log line and error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    /// Plugin name (from its info), e.g. `s3`.
    pub plugin: String,
    /// Database path, or `-` outside replication (e.g. `plugin check`).
    pub database: String,
    /// Replica name or URL.
    pub replica: String,
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugin `{}`, database `{}`, replica `{}`", self.plugin, self.database, self.replica)
    }
}

/// The contract's typed storage errors, as the host sees them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    #[error("access denied: {0}")]
    AccessDenied(String),
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("transient failure (will retry): {0}")]
    Transient(String),
    #[error("throttled by the store (will back off): {message}")]
    Throttled { message: String, retry_after_ms: Option<u64> },
    #[error("permanent failure: {0}")]
    Permanent(String),
}

impl StorageError {
    /// The message, changed by `f` (to redact what a plugin quoted).
    pub fn map_message(&mut self, f: impl FnOnce(&str) -> String) {
        let m = match self {
            StorageError::NotFound(m)
            | StorageError::PreconditionFailed(m)
            | StorageError::AccessDenied(m)
            | StorageError::InvalidConfig(m)
            | StorageError::Unsupported(m)
            | StorageError::Transient(m)
            | StorageError::Permanent(m)
            | StorageError::Throttled { message: m, .. } => m,
        };
        *m = f(m);
    }

    /// The contract's name of this kind (for metrics and logs).
    pub fn kind_name(&self) -> &'static str {
        match self {
            StorageError::NotFound(_) => "not-found",
            StorageError::PreconditionFailed(_) => "precondition-failed",
            StorageError::AccessDenied(_) => "access-denied",
            StorageError::InvalidConfig(_) => "invalid-config",
            StorageError::Unsupported(_) => "unsupported",
            StorageError::Transient(_) => "transient",
            StorageError::Throttled { .. } => "throttled",
            StorageError::Permanent(_) => "permanent",
        }
    }

    /// Whether retrying the call can help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StorageError::Transient(_) | StorageError::Throttled { .. })
    }
}

impl From<super::bindings::WitError> for StorageError {
    /// A plugin's message goes into one log line: a store's HTML error
    /// page or a multi-line answer is folded onto it (`sandbox::one_line`).
    fn from(e: super::bindings::WitError) -> Self {
        use super::bindings::WitError as W;
        let line = |m: String| super::sandbox::one_line(&m);
        match e {
            W::NotFound(m) => StorageError::NotFound(line(m)),
            W::PreconditionFailed(m) => StorageError::PreconditionFailed(line(m)),
            W::AccessDenied(m) => StorageError::AccessDenied(line(m)),
            W::InvalidConfig(m) => StorageError::InvalidConfig(line(m)),
            W::Unsupported(m) => StorageError::Unsupported(line(m)),
            W::Transient(m) => StorageError::Transient(line(m)),
            W::Throttled(t) => StorageError::Throttled { message: line(t.message), retry_after_ms: t.retry_after_ms },
            W::Permanent(m) => StorageError::Permanent(line(m)),
        }
    }
}

/// What went wrong in a plugin call.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// The plugin answered with a typed error.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The plugin tried to grow its memory past the sandbox limit.
    #[error(
        "the plugin exceeded its memory limit of {limit_mib} MiB and was stopped; raise `sandbox.memory-mib` if this plugin legitimately needs more"
    )]
    MemoryLimit { limit_mib: u64 },
    /// The plugin ran past its CPU budget for one call.
    #[error(
        "the plugin used more than its CPU budget of {budget_ms} ms for one call and was stopped; raise `sandbox.cpu-ms` if this is legitimate"
    )]
    CpuLimit { budget_ms: u64 },
    /// The plugin trapped (panic, abort, invalid access).
    #[error("the plugin crashed ({trap}){stderr}")]
    Trap { trap: String, stderr: String },
    /// The component could not be compiled, linked or instantiated.
    #[error("the plugin could not be loaded: {0}")]
    Load(String),
    /// An earlier trap left this session unusable.
    #[error("the plugin session is unusable after an earlier failure; open a new one")]
    Poisoned,
}

/// An error from a plugin call, with who it concerns and what was called.
#[derive(Debug, thiserror::Error)]
#[error("{op} failed ({labels}): {kind}")]
pub struct PluginError {
    /// Plugin, database and replica.
    pub labels: Arc<Labels>,
    /// The operation, e.g. `put segments/0000/...`.
    pub op: String,
    /// What went wrong (shown in the message, so not also a `source`).
    pub kind: ErrorKind,
}

impl PluginError {
    /// Whether retrying (in a fresh session) can help. Sandbox violations
    /// cannot: the same plugin will do the same thing again.
    pub fn is_retryable(&self) -> bool {
        matches!(&self.kind, ErrorKind::Storage(e) if e.is_retryable())
    }

    /// The typed storage error, if the plugin returned one.
    pub fn storage(&self) -> Option<&StorageError> {
        match &self.kind {
            ErrorKind::Storage(e) => Some(e),
            _ => None,
        }
    }

    /// True for `not-found`.
    pub fn is_not_found(&self) -> bool {
        matches!(self.storage(), Some(StorageError::NotFound(_)))
    }
}
