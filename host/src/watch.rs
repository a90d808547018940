//! File notifications for prompt pickup of writes: one inotify watcher for
//! the whole process (not a thread per database, #1469), watching each
//! database's directory and waking that database's loop when its file or
//! WAL changes. Polling at `monitor-interval` stays as the fallback.

use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

type Subscribers = Arc<Mutex<HashMap<PathBuf, Vec<(PathBuf, Arc<Notify>)>>>>;

/// The process's watcher.
pub struct FileWatch {
    watcher: Mutex<notify::RecommendedWatcher>,
    subs: Subscribers,
}

impl FileWatch {
    /// `None` where notifications are unavailable (polling still works).
    pub fn new() -> Option<Arc<FileWatch>> {
        let subs: Subscribers = Arc::default();
        let routes = subs.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            let Ok(routes) = routes.lock() else { return };
            for path in &event.paths {
                let Some(dir) = path.parent() else { continue };
                for (db, wake) in routes.get(dir).into_iter().flatten() {
                    if path.as_os_str().as_encoded_bytes().starts_with(db.as_os_str().as_encoded_bytes()) {
                        wake.notify_one();
                    }
                }
            }
        });
        match watcher {
            Ok(w) => Some(Arc::new(FileWatch { watcher: Mutex::new(w), subs })),
            Err(e) => {
                tracing::info!("file notifications unavailable ({e}); polling at monitor-interval");
                None
            }
        }
    }

    /// Wake the returned `Notify` when `db` or its `-wal` changes.
    pub fn subscribe(&self, db: &Path) -> Arc<Notify> {
        let wake = Arc::new(Notify::new());
        let Some(dir) = db.parent().map(Path::to_path_buf) else { return wake };
        let Ok(mut subs) = self.subs.lock() else { return wake };
        let entry = subs.entry(dir.clone()).or_default();
        if entry.is_empty() {
            let watched = self.watcher.lock().map(|mut w| w.watch(&dir, RecursiveMode::NonRecursive));
            if let Ok(Err(e)) = watched {
                tracing::debug!("cannot watch {}: {e}; polling only", dir.display());
            }
        }
        entry.push((db.to_path_buf(), wake.clone()));
        wake
    }
}
