//! What one database's loop shares with the registry that runs it (and,
//! through the registry, with the control socket): whether it replicates,
//! a way to ask it for a sync now, each sync's outcome, and its replicas'
//! positions. The loop writes; the registry reads and asks.

use crate::replica::ReplicaShared;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// How often a wait for the replicas to ship looks at their positions.
/// They are atomics updated by the replica tasks; a look costs nothing.
const SHIPPED_POLL: Duration = Duration::from_millis(20);

/// Where a database's loop is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for the database to exist or to open.
    Opening,
    /// Open and replicating.
    Replicating,
    /// Its loop ended (stopped, or failed for good).
    Stopped,
}

/// The outcome of the newest sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// The newest sync request (`Live::request_sync`) it served: it
    /// began after that request was made.
    pub served: u64,
    /// What capture has made durable after it.
    pub txid: u64,
    /// Its error, if it failed.
    pub error: Option<String>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Live {
    state: AtomicU8,
    /// Sync requests made so far; the loop serves the newest at its next
    /// look.
    requested: AtomicU64,
    wake: Notify,
    syncs: watch::Sender<SyncReport>,
    replicas: Mutex<Vec<Arc<ReplicaShared>>>,
}

impl Live {
    pub fn new() -> Arc<Live> {
        Arc::new(Live {
            state: AtomicU8::new(State::Opening as u8),
            requested: AtomicU64::new(0),
            wake: Notify::new(),
            syncs: watch::channel(SyncReport::default()).0,
            replicas: Mutex::new(Vec::new()),
        })
    }

    pub fn state(&self) -> State {
        match self.state.load(Ordering::SeqCst) {
            0 => State::Opening,
            1 => State::Replicating,
            _ => State::Stopped,
        }
    }

    pub(super) fn set_state(&self, state: State) {
        self.state.store(state as u8, Ordering::SeqCst);
    }

    pub(super) fn set_replicas(&self, replicas: Vec<Arc<ReplicaShared>>) {
        if let Ok(mut r) = self.replicas.lock() {
            *r = replicas;
        }
    }

    /// What capture has made durable, as of the newest sync.
    pub fn txid(&self) -> u64 {
        self.syncs.borrow().txid
    }

    /// The lowest TXID every replica holds (`None` before any replica runs).
    pub fn replicated_txid(&self) -> Option<u64> {
        let replicas = self.replicas.lock().ok()?;
        replicas.iter().map(|r| r.shipped.load(Ordering::SeqCst)).min()
    }

    /// When a replica last stored something successfully, in
    /// milliseconds since the epoch (`crate::clock`).
    pub fn last_sync_ms(&self) -> Option<i64> {
        let replicas = self.replicas.lock().ok()?;
        let ms = replicas.iter().map(|r| r.last_success_ms.load(Ordering::SeqCst)).max().filter(|ms| *ms > 0)?;
        Some(ms as i64)
    }

    /// The loop's side: the newest request not yet served (`Some(its
    /// number)`, to be passed to `record_sync`), if any.
    pub(super) fn pending_request(&self) -> Option<u64> {
        let asked = self.requested.load(Ordering::SeqCst);
        (asked > self.syncs.borrow().served).then_some(asked)
    }

    /// The loop's side: wait for a sync request.
    pub(super) async fn requested(&self) {
        self.wake.notified().await
    }

    /// The loop's side: a sync finished (`served`: the request it served,
    /// if any).
    pub(super) fn record_sync(&self, served: Option<u64>, txid: u64, error: Option<String>) {
        self.syncs.send_modify(|r| {
            r.served = served.unwrap_or(r.served).max(r.served);
            r.txid = txid;
            r.error = error;
        });
    }

    /// Ask the loop for a sync that begins after this call, and wait for
    /// it to finish, up to `timeout`: its report, or `None` on timeout.
    pub async fn sync_now(&self, timeout: Duration) -> Option<SyncReport> {
        let mut rx = self.syncs.subscribe();
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        self.wake.notify_one();
        let served = rx.wait_for(|r| r.served >= ticket);
        match tokio::time::timeout(timeout, served).await {
            Ok(Ok(report)) => Some(report.clone()),
            _ => None,
        }
    }

    /// Wait until every replica holds `txid`, up to `timeout`: the lowest
    /// TXID every replica holds then.
    pub async fn wait_shipped(&self, txid: u64, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let held = self.replicated_txid().unwrap_or(0);
            if held >= txid || tokio::time::Instant::now() >= deadline {
                return held;
            }
            tokio::time::sleep(SHIPPED_POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sync_request_is_served_only_by_a_sync_that_began_after_it() {
        let live = Live::new();
        assert_eq!(live.pending_request(), None);
        let asker = {
            let live = live.clone();
            tokio::spawn(async move { live.sync_now(Duration::from_secs(5)).await })
        };
        live.requested().await;
        // A sync that was already running when the request came serves
        // no request; the asker keeps waiting.
        live.record_sync(None, 3, None);
        let ticket = live.pending_request().expect("the request is pending");
        live.record_sync(Some(ticket), 4, None);
        let report = asker.await.unwrap().expect("served");
        assert_eq!((report.served, report.txid), (ticket, 4));
        assert_eq!(live.pending_request(), None);
    }

    #[tokio::test]
    async fn an_unserved_request_times_out() {
        let live = Live::new();
        assert_eq!(live.sync_now(Duration::from_millis(30)).await, None);
    }

    #[tokio::test]
    async fn shipped_is_the_slowest_replica() {
        let live = Live::new();
        let (a, b) = (Arc::new(ReplicaShared::default()), Arc::new(ReplicaShared::default()));
        a.shipped.store(7, Ordering::SeqCst);
        b.shipped.store(5, Ordering::SeqCst);
        live.set_replicas(vec![a, b.clone()]);
        assert_eq!(live.wait_shipped(7, Duration::from_millis(50)).await, 5);
        b.shipped.store(9, Ordering::SeqCst);
        assert_eq!(live.wait_shipped(7, Duration::from_secs(5)).await, 7);
    }
}
