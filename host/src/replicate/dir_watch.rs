//! `watch: true` on a `dir` entry: databases created below the directory
//! while running are replicated, and ones removed stop (with their final
//! sync attempted), without a restart. A notification of a file the
//! entry covers triggers a scan (at most one per `RESCAN_SETTLE`); where
//! notifications are unavailable, the directory is scanned every
//! `RESCAN_POLL`.

use super::Registry;
use crate::config::dirs::WatchedDir;
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// After a notification, wait this long for more before scanning: a new
/// database is written in several steps (created empty, then its header),
/// and one scan covers them all.
const RESCAN_SETTLE: Duration = Duration::from_millis(100);
/// Scan interval without notifications (inotify unavailable or out of
/// watches): a readdir, not a stat per database.
const RESCAN_POLL: Duration = Duration::from_secs(5);
/// How long the final sync of a database whose file was removed may take.
const REMOVED_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Files the entry covers that are not SQLite databases yet: a change to
/// one (its header written) is worth a scan.
type Skipped = Arc<std::sync::Mutex<BTreeSet<PathBuf>>>;

/// Whether an event can mean a database appeared or went: a file created,
/// removed or renamed. Not a write to a database already there (each
/// checkpoint would scan the directory).
fn worth_a_scan(kind: &EventKind) -> bool {
    use notify::event::ModifyKind;
    matches!(kind, EventKind::Create(_) | EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_)))
}

/// What a scan changes: databases to add (found, not registered by this
/// entry) and to remove (registered by it, gone).
pub(super) fn diff(mine: &BTreeSet<PathBuf>, found: &BTreeSet<PathBuf>) -> (Vec<PathBuf>, Vec<PathBuf>) {
    (found.difference(mine).cloned().collect(), mine.difference(found).cloned().collect())
}

/// Watch `dir` until `shutdown`, adding and removing its databases.
pub fn watch_dir(dir: WatchedDir, registry: Arc<Registry>, shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let (tx, rx) = tokio::sync::mpsc::channel::<()>(1);
        let covered = dir.clone();
        let skipped: Skipped = Arc::default();
        let pending = skipped.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            let candidate = |p: &PathBuf| pending.lock().is_ok_and(|s| s.contains(p));
            if worth_a_scan(&event.kind) && event.paths.iter().any(|p| covered.covers(p))
                || matches!(event.kind, EventKind::Modify(_)) && event.paths.iter().any(candidate)
            {
                // Full: a scan is already due, which covers this one.
                let _ = tx.try_send(());
            }
        });
        let mode = if dir.recursive { RecursiveMode::Recursive } else { RecursiveMode::NonRecursive };
        let watcher = watcher.and_then(|mut w| w.watch(&dir.dir, mode).map(|_| w));
        let notified = match &watcher {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(dir = %dir.dir.display(), "cannot watch the directory ({e}); scanning it every {RESCAN_POLL:?} instead (raise fs.inotify.max_user_watches to be notified)");
                false
            }
        };
        // The registry holds what the scan at start found.
        let paths = registry.paths().await;
        let mine: BTreeSet<PathBuf> = paths.into_iter().filter(|p| dir.covers(p)).collect();
        follow(&dir, &registry, mine, skipped, rx, notified, shutdown).await;
        drop(watcher);
    });
}

async fn follow(
    dir: &WatchedDir,
    registry: &Registry,
    mut mine: BTreeSet<PathBuf>,
    skipped: Skipped,
    mut events: tokio::sync::mpsc::Receiver<()>,
    notified: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        // A scan at once: a database may have appeared since the scan at start.
        rescan(dir, registry, &mut mine, &skipped).await;
        tokio::select! {
            _ = events.recv(), if notified => tokio::time::sleep(RESCAN_SETTLE).await,
            _ = tokio::time::sleep(RESCAN_POLL), if !notified => {}
            _ = shutdown.changed() => return,
        }
        // Drop what arrived while settling: this scan covers it.
        while events.try_recv().is_ok() {}
        if *shutdown.borrow() {
            return;
        }
    }
}

async fn rescan(dir: &WatchedDir, registry: &Registry, mine: &mut BTreeSet<PathBuf>, skipped: &Skipped) {
    let found = match dir.scan_except(mine) {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(dir = %dir.dir.display(), "cannot scan the watched directory: {e:#}");
            return;
        }
    };
    if let Ok(mut skipped) = skipped.lock() {
        for p in found.not_sqlite.iter().filter(|p| !skipped.contains(*p)) {
            tracing::warn!(
                "{} matches `pattern` but is not a SQLite database (yet); skipped until it is one",
                p.display()
            );
        }
        *skipped = found.not_sqlite.into_iter().collect();
    }
    let (added, removed) = diff(mine, &found.present);
    for spec in found.dbs.into_iter().filter(|d| added.contains(&d.path)) {
        let path = spec.path.clone();
        match registry.add(spec).await {
            Ok(_) => {
                tracing::info!(database = %path.display(), "new database in a watched directory; replicating");
                mine.insert(path);
            }
            Err(e) => tracing::error!(database = %path.display(), "cannot replicate the new database: {e:#}"),
        }
    }
    for path in removed {
        tracing::info!(database = %path.display(), "database removed from a watched directory; stopping its replication");
        if let Some(Err(e)) = registry.remove(&path, REMOVED_SYNC_TIMEOUT).await {
            tracing::warn!(database = %path.display(), "{e:#}");
        }
        mine.remove(&path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_adds_the_new_and_removes_the_gone() {
        let set = |v: &[&str]| v.iter().map(PathBuf::from).collect::<BTreeSet<_>>();
        let (added, removed) = diff(&set(&["/d/a.db", "/d/b.db"]), &set(&["/d/b.db", "/d/c.db"]));
        assert_eq!(added, vec![PathBuf::from("/d/c.db")]);
        assert_eq!(removed, vec![PathBuf::from("/d/a.db")]);
        assert_eq!(diff(&set(&["/d/a.db"]), &set(&["/d/a.db"])), (vec![], vec![]));
    }
}
