//! The heartbeat: a ping to a dead-man's-switch URL while every replica
//! is healthy, so a monitoring service notices when replication stops.

use crate::replica::ReplicaShared;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// Every replica of every database, for the heartbeat.
#[derive(Clone, Default)]
/// Weak: a database removed while running drops out of it.
pub struct Health(Arc<Mutex<Vec<Weak<ReplicaShared>>>>);

impl Health {
    pub fn add(&self, replica: &Arc<ReplicaShared>) {
        if let Ok(mut h) = self.0.lock() {
            h.retain(|r| r.strong_count() > 0);
            h.push(Arc::downgrade(replica));
        }
    }

    fn healthy(&self) -> bool {
        let Ok(replicas) = self.0.lock() else { return false };
        replicas.iter().filter_map(Weak::upgrade).all(|s| s.failures.load(Ordering::SeqCst) == 0)
    }
}

/// Ping `url` every `every` while all replicas are healthy.
pub async fn heartbeat(url: String, every: Duration, health: Health, mut shutdown: watch::Receiver<bool>) {
    let client = reqwest::Client::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        if health.healthy()
            && let Err(e) =
                client.get(&url).timeout(Duration::from_secs(30)).send().await.and_then(|r| r.error_for_status())
        {
            tracing::warn!("heartbeat to {url} failed: {e}");
        }
    }
}
