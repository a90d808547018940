//! What a replica task is configured with, and what it shares with its
//! database's capture loop (position, whether it wants a snapshot, its
//! health).

use super::compact::CompactionConfig;
use super::error::ReplicaError;
use super::retention::RetentionConfig;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Per-replica settings.
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    pub name: String,
    pub sync_interval: Duration,
    pub snapshot_interval: Duration,
    pub retention: RetentionConfig,
    pub compaction: CompactionConfig,
    /// How long the replica's lease outlives its last renewal (decision
    /// 17, `lease::DEFAULT_LEASE_TIMEOUT`).
    pub lease_timeout: Duration,
    /// `false`: no lease (`lease-timeout: off`): the replica writes without
    /// one and makes no lease requests.
    pub lease: bool,
    /// A `-once` run: a lease held by a live process is given up on, not
    /// waited for.
    pub once: bool,
}

/// What a replica shares with its database's capture loop.
#[derive(Debug, Default)]
pub struct ReplicaShared {
    /// Highest TXID this replica holds contiguously.
    pub shipped: AtomicU64,
    /// The replica needs a snapshot (new replica, fell behind the spool,
    /// snapshot interval).
    pub wants_snapshot: AtomicBool,
    /// Consecutive failures, for status and metrics.
    pub failures: AtomicU64,
    /// The first attempt to learn the replica's state finished (either way).
    pub ready: AtomicBool,
    /// The highest TXID the replica held when first listed.
    pub held: AtomicU64,
    /// The replica has been listed, so `held` is what it holds.
    pub listed: AtomicBool,
    /// The last failure, and whether a retry could help it.
    pub last_error: std::sync::Mutex<Option<(String, bool)>>,
    /// Another process holds the replica's lease (decision 17): a run
    /// ending so has not replicated, whatever our position says.
    pub locked_out: AtomicBool,
    /// When the replica last did something successfully (milliseconds
    /// since the epoch; 0: never), for the control socket's `list`.
    pub last_success_ms: AtomicU64,
    /// Told whenever `shipped` moves: the database's loop then frees the
    /// spool and updates the metrics without waiting for the next commit
    /// (a shipped 1.4 GB snapshot stayed on disk until then). Told too
    /// when a snapshot is wanted, which a resting database then takes.
    pub shipped_news: tokio::sync::Notify,
}

impl ReplicaShared {
    /// Ask the capture for a snapshot, and wake the database's loop to
    /// take it (a resting database looks only every `RESTING_LOOK`). Told
    /// once, when the wish begins: a snapshot that keeps failing is
    /// retried on the loop's back-off, not at each replica pass.
    pub fn want_snapshot(&self) {
        if !self.wants_snapshot.swap(true, Ordering::SeqCst) {
            self.shipped_news.notify_one();
        }
    }

    pub(super) fn record_success(&self) {
        self.locked_out.store(false, Ordering::SeqCst);
        self.failures.store(0, Ordering::SeqCst);
        self.last_success_ms.store(crate::clock::now_ms().max(0) as u64, Ordering::SeqCst);
        if let Ok(mut e) = self.last_error.lock() {
            *e = None;
        }
    }

    pub(super) fn record_failure(&self, e: &ReplicaError) {
        let locked_out = matches!(e, ReplicaError::LeaseHeld { .. } | ReplicaError::LeaseLost { .. });
        self.locked_out.store(locked_out, Ordering::SeqCst);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some((format!("{e}"), e.is_retryable()));
        }
        self.failures.fetch_add(1, Ordering::SeqCst);
    }

    /// The last error, if the replica is failing.
    pub fn failing(&self) -> Option<(String, bool)> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
}
