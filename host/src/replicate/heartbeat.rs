//! The heartbeat: a ping to a dead-man's-switch URL while every replica
//! is healthy, so a monitoring service notices when replication stops.

use crate::replica::ReplicaShared;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Every replica of every database, for the heartbeat.
#[derive(Clone, Default)]
pub struct Health(Arc<Mutex<Vec<Arc<ReplicaShared>>>>);

impl Health {
    pub fn add(&self, replica: Arc<ReplicaShared>) {
        if let Ok(mut h) = self.0.lock() {
            h.push(replica);
        }
    }

    fn healthy(&self) -> bool {
        self.0.lock().map(|r| r.iter().all(|s| s.failures.load(Ordering::SeqCst) == 0)).unwrap_or(false)
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
