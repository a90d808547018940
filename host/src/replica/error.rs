//! Errors of replica operations, classified where they arise: the replica
//! loop (`task`) decides from the class alone whether to retry, how soon,
//! and what to tell the operator.

use crate::plugin::{ErrorKind, PluginError, StorageError};

/// What an error means for the loop that meets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Retrying heals it (a flaky store, a listing gone stale, a busy
    /// disk): retried with backoff.
    Transient,
    /// Only a person can fix it (credentials, configuration, a full or
    /// read-only disk, another process writing the replica, a plugin that
    /// crashes or exceeds its limits): said once with what to do, then
    /// retried slowly in case it was fixed.
    Operator,
    /// Data that is not what it claims to be, named in the message:
    /// refused; the same work retried meets the same data.
    Corrupt,
    /// sluice broke one of its own rules: reported as a bug.
    Bug,
}

impl Class {
    /// Of a failed plugin call.
    pub fn of_plugin(e: &PluginError) -> Class {
        match &e.kind {
            _ if e.is_retryable() => Class::Transient,
            // A listed object gone: the listing is refetched after an error.
            ErrorKind::Storage(StorageError::NotFound(_)) => Class::Transient,
            ErrorKind::Storage(_) | ErrorKind::MemoryLimit { .. } | ErrorKind::CpuLimit { .. } => Class::Operator,
            ErrorKind::Trap { .. } | ErrorKind::Load(_) | ErrorKind::Poisoned => Class::Operator,
        }
    }

    /// Of a failed local file operation: a full, read-only or forbidden
    /// disk needs a person; anything else may pass.
    pub fn of_io(e: &std::io::Error) -> Class {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::StorageFull | K::QuotaExceeded | K::PermissionDenied | K::ReadOnlyFilesystem | K::NotADirectory => {
                Class::Operator
            }
            _ => Class::Transient,
        }
    }
}

/// Errors of replica operations.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(
        "replica {replica}: {key} already exists with different content: another sluice process is replicating to this replica (stop one of them)"
    )]
    Conflict { replica: String, key: String },
    #[error(
        "replica {replica}: spooled segment {path} is damaged ({msg}); it is dropped and the replica continues from a snapshot"
    )]
    DamagedSpool { replica: String, path: String, msg: String },
    /// Data in the replica that retrying cannot fix (a segment holding
    /// another's bytes, or one that does not decode).
    #[error("replica {replica} holds corrupt data: {msg}")]
    Corrupt { replica: String, msg: String },
    /// An encrypted segment that could not be opened (decision 20):
    /// `class` says whether a key is missing or the object is damaged.
    #[error("replica {replica}: cannot decrypt {key}: {msg}")]
    Sealed { replica: String, key: String, msg: String, class: Class },
    /// A local file operation failed (the spool, scratch files, the
    /// replica's position).
    #[error("replica {replica}: {what}: {source}")]
    Local { replica: String, what: String, source: std::io::Error },
    /// The store does not hold what was listed or asked for.
    #[error("replica {replica}: {msg}")]
    Store { replica: String, msg: String },
    /// The replica's path holds a backup Litestream wrote (decision 23):
    /// nothing is written beside it.
    #[error(
        "replica {replica} holds {what}: sluice does not start a second history beside it. Restore from it (`sluice restore -o DB_PATH URL`), then point this replica at a new, empty path (or move Litestream's files away)"
    )]
    Foreign { replica: String, what: String },
    /// The replica's storage quota (`sandbox: storage-quota-mib`) has no
    /// room for the next upload.
    #[error(
        "{labels}: the replica holds {held} bytes and its storage quota is {quota}; uploading {key} ({size} bytes) would pass it, so nothing more is uploaded: raise `storage-quota-mib` in the replica's `sandbox:` and reload (SIGHUP), or shorten its retention"
    )]
    Quota { labels: String, key: String, held: u64, quota: u64, size: u64 },
    /// sluice broke one of its own rules.
    #[error("replica {replica}: {msg} (a bug in sluice: please report it)")]
    Bug { replica: String, msg: String },
    /// A compaction failed; `class` from what caused it (`class_of_chain`).
    #[error("replica {replica}: {msg}")]
    Compaction { replica: String, msg: String, class: Class },
    /// Another process holds the replica's lease (decision 17): this one
    /// waits for it (`-once` gives up), writing nothing.
    #[error(
        "{labels}: {holder} holds this replica's lease, so this process writes nothing to it{once}: stop that process, or point this database at another replica path (a lease left by a process that died is taken over {ttl} after its last renewal)"
    )]
    LeaseHeld { labels: String, holder: String, ttl: String, once: &'static str },
    /// Our lease was taken over (we were stopped, or cut off from the
    /// store, for longer than its timeout): writes stopped at once.
    #[error(
        "{labels}: {holder} took over this replica's lease (this process was stopped, or cut off from the store, for longer than the lease timeout); this process stopped writing to it at once"
    )]
    LeaseLost { labels: String, holder: String },
    /// The lease could not be confirmed recently enough: nothing is
    /// written, as another process could take over meanwhile.
    #[error("{labels}: this replica's lease is not confirmed ({why}); nothing is written to the replica until it is")]
    LeaseUnconfirmed { labels: String, why: String, class: Class },
}

impl ReplicaError {
    pub fn class(&self) -> Class {
        match self {
            ReplicaError::Plugin(e) => Class::of_plugin(e),
            ReplicaError::Conflict { .. } | ReplicaError::Foreign { .. } | ReplicaError::Quota { .. } => {
                Class::Operator
            }
            // Dropped by the shipping loop, which asks for a snapshot.
            ReplicaError::DamagedSpool { .. } | ReplicaError::Corrupt { .. } => Class::Corrupt,
            ReplicaError::Local { source, .. } => Class::of_io(source),
            ReplicaError::Store { .. } => Class::Transient,
            ReplicaError::Bug { .. } => Class::Bug,
            ReplicaError::Compaction { class, .. } | ReplicaError::Sealed { class, .. } => *class,
            ReplicaError::LeaseHeld { .. } | ReplicaError::LeaseLost { .. } => Class::Operator,
            ReplicaError::LeaseUnconfirmed { class, .. } => *class,
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.class() == Class::Transient
    }

    /// What the operator should do about an error of this class (empty for
    /// transient ones).
    pub fn advice(&self) -> &'static str {
        if let ReplicaError::LeaseLost { .. } = self {
            return "two processes replicate to this replica: stop one of them, or give each database its own replica path; this one writes again only once it holds the lease, and the local spool keeps the changes meanwhile";
        }
        match self.class() {
            Class::Transient => "",
            Class::Operator => {
                "fix the cause named above; sluice retries every few minutes, and the local spool keeps the changes meanwhile"
            }
            Class::Corrupt => {
                "the named object is not what its name says; the replica heals at its next snapshot (`sluice replicate -force-snapshot`), restores refuse it meanwhile"
            }
            Class::Bug => "please report it with this log; sluice retries every few minutes",
        }
    }
}

/// The class of an `anyhow` chain (compaction's merge): by the first
/// segment-format or I/O error in it.
pub fn class_of_chain(e: &anyhow::Error) -> Class {
    for cause in e.chain() {
        if let Some(f) = cause.downcast_ref::<crate::segment::FormatError>() {
            use crate::segment::FormatError as F;
            return match f {
                F::Io(io) => Class::of_io(io),
                // Written by a newer sluice: upgrading heals it.
                F::Version(_) | F::Flags(_) | F::Encrypted => Class::Operator,
                _ => Class::Corrupt,
            };
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return Class::of_io(io);
        }
    }
    Class::Transient
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn local(kind: io::ErrorKind) -> ReplicaError {
        ReplicaError::Local { replica: "r".into(), what: "write".into(), source: io::Error::from(kind) }
    }

    #[test]
    fn a_full_or_read_only_disk_needs_an_operator_a_reset_connection_does_not() {
        assert_eq!(local(io::ErrorKind::StorageFull).class(), Class::Operator);
        assert_eq!(local(io::ErrorKind::ReadOnlyFilesystem).class(), Class::Operator);
        assert_eq!(local(io::ErrorKind::PermissionDenied).class(), Class::Operator);
        assert_eq!(local(io::ErrorKind::Interrupted).class(), Class::Transient);
        assert!(local(io::ErrorKind::ConnectionReset).is_retryable());
        assert!(!local(io::ErrorKind::StorageFull).is_retryable());
    }

    #[test]
    fn corrupt_data_and_bugs_are_not_retried_as_transient() {
        assert_eq!(ReplicaError::Corrupt { replica: "r".into(), msg: "m".into() }.class(), Class::Corrupt);
        assert_eq!(ReplicaError::Bug { replica: "r".into(), msg: "m".into() }.class(), Class::Bug);
        assert_eq!(ReplicaError::Conflict { replica: "r".into(), key: "k".into() }.class(), Class::Operator);
        assert_eq!(ReplicaError::Store { replica: "r".into(), msg: "m".into() }.class(), Class::Transient);
    }

    #[test]
    fn a_lease_held_or_lost_needs_an_operator_and_is_not_retried_as_transient() {
        let held = ReplicaError::LeaseHeld { labels: "l".into(), holder: "h".into(), ttl: "1m".into(), once: "" };
        assert_eq!(held.class(), Class::Operator);
        assert!(!held.is_retryable(), "a -once run and a shutdown do not wait for it");
        let lost = ReplicaError::LeaseLost { labels: "l".into(), holder: "h".into() };
        assert_eq!(lost.class(), Class::Operator);
        assert!(lost.advice().contains("stop one of them"));
        let unsure = ReplicaError::LeaseUnconfirmed { labels: "l".into(), why: "w".into(), class: Class::Transient };
        assert!(unsure.is_retryable());
    }

    #[test]
    fn a_merge_error_is_classified_by_what_caused_it() {
        let corrupt = anyhow::Error::new(crate::segment::FormatError::Misnamed("x".into())).context("merging");
        assert_eq!(class_of_chain(&corrupt), Class::Corrupt);
        let full = anyhow::Error::new(io::Error::from(io::ErrorKind::StorageFull)).context("writing scratch");
        assert_eq!(class_of_chain(&full), Class::Operator);
        assert_eq!(class_of_chain(&anyhow::anyhow!("something")), Class::Transient);
    }
}
