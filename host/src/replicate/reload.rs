//! SIGHUP: read the config file again and apply its `dbs:` to the running
//! process. Databases the file no longer lists stop (their final sync
//! included), new ones start, and a database whose settings changed is
//! stopped and started again on its new ones; the others go on
//! untouched. Databases registered through the control socket or found in
//! a watched directory are not the file's to remove. Everything else of
//! the file (socket, metrics address, logging, watched directories) takes
//! effect at the next start, and the log says so.

use super::{Added, Registry};
use crate::config::DatabaseSpec;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What a reload changes, decided from the databases the file gave last
/// time and the ones it gives now.
#[derive(Debug, Default, PartialEq)]
pub struct DbChanges {
    pub added: Vec<DatabaseSpec>,
    pub removed: Vec<PathBuf>,
    /// Listed before and now, with other settings.
    pub changed: Vec<DatabaseSpec>,
    pub unchanged: usize,
}

/// Compare the file's databases before and after.
pub fn diff_dbs(before: &BTreeMap<PathBuf, DatabaseSpec>, after: &[DatabaseSpec]) -> DbChanges {
    let mut changes = DbChanges::default();
    for spec in after {
        match before.get(&spec.path) {
            None => changes.added.push(spec.clone()),
            Some(old) if old != spec => changes.changed.push(spec.clone()),
            Some(_) => changes.unchanged += 1,
        }
    }
    let listed: std::collections::BTreeSet<&PathBuf> = after.iter().map(|s| &s.path).collect();
    changes.removed = before.keys().filter(|p| !listed.contains(p)).cloned().collect();
    changes
}

/// Applies reloads of one config file to a registry.
pub struct Reloader {
    path: PathBuf,
    expand_env: bool,
    registry: Arc<Registry>,
    /// The databases the file gave, as running now.
    mine: BTreeMap<PathBuf, DatabaseSpec>,
    /// Whether the run lives on without databases (control socket or
    /// watched directory): else a file listing none is refused, as at start.
    lives_empty: bool,
}

impl Reloader {
    pub fn new(
        path: PathBuf,
        expand_env: bool,
        registry: Arc<Registry>,
        dbs: &[DatabaseSpec],
        lives_empty: bool,
    ) -> Self {
        let mine = dbs.iter().map(|d| (d.path.clone(), d.clone())).collect();
        Reloader { path, expand_env, registry, mine, lives_empty }
    }

    /// Read the file and apply it. A file that does not read or resolve
    /// changes nothing: the error is logged and the run goes on as it was.
    pub async fn reload(&mut self) {
        tracing::info!("SIGHUP: reloading {}", self.path.display());
        let read = crate::config::read(&self.path, self.expand_env).and_then(|parsed| {
            parsed.log_messages();
            crate::config::resolve(&parsed.config)
        });
        let resolved = match read {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("{}: not reloaded, the run goes on unchanged: {e:#}", self.path.display());
                return;
            }
        };
        if resolved.dbs.is_empty() && !self.lives_empty {
            tracing::error!(
                "{} now lists no databases under `dbs:`; not reloaded, the run goes on unchanged",
                self.path.display()
            );
            return;
        }
        let changes = diff_dbs(&self.mine, &resolved.dbs);
        let timeout = resolved.shutdown_sync_timeout;
        let summary = format!(
            "{} added, {} removed, {} changed, {} unchanged",
            changes.added.len(),
            changes.removed.len(),
            changes.changed.len(),
            changes.unchanged
        );
        let _open = self.registry.changing();
        self.apply(changes, timeout).await;
        tracing::info!(
            "reloaded {}: {summary}; other settings (socket, metrics address, logging, watched directories) apply at the next start",
            self.path.display()
        );
    }

    async fn apply(&mut self, changes: DbChanges, timeout: Duration) {
        // Together: each final sync may take up to `timeout` (a tenant
        // whose store is down takes all of it), and one after another
        // that was minutes for a handful of broken tenants.
        // One still finishing is forgotten by the registry once it ends.
        let stops = changes.removed.iter().map(|path| self.stop(path, timeout, "no longer in the config file"));
        futures::future::join_all(stops).await;
        for path in &changes.removed {
            self.mine.remove(path);
        }
        for spec in changes.changed {
            self.restart(spec, timeout).await;
        }
        for spec in changes.added {
            self.add(spec).await;
        }
    }

    /// Stop and forget `path` (`why` says what the file did); whether it
    /// is gone. A final sync that failed still ends its loop: it is gone.
    async fn stop(&self, path: &Path, timeout: Duration, why: &str) -> bool {
        let database = path.display().to_string();
        match self.registry.remove(path, timeout).await {
            None | Some(Ok(())) => tracing::info!(database = %database, "{why}: stopped after its final sync"),
            Some(Err(e)) => tracing::error!(database = %database, "{why}, but its final sync failed: {e:#}"),
        }
        let gone = self.registry.live(path).await.is_none();
        if !gone {
            tracing::warn!(
                database = %database,
                "{why}: it is still finishing its final sync, and is forgotten once that ends (`sluice list` shows it until then)"
            );
        }
        gone
    }

    /// Its new stores first: a setting that does not work leaves the
    /// database replicating on its old ones.
    async fn restart(&mut self, spec: DatabaseSpec, timeout: Duration) {
        let database = spec.path.display().to_string();
        let stores = match self.registry.open(&spec).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(database = %database, "its new settings do not work, so it goes on with the old ones: {e:#}");
                return;
            }
        };
        if !self.stop(&spec.path, timeout, "its settings changed").await {
            tracing::warn!(database = %database, "send SIGHUP again once it has ended to start it on its new settings");
            return;
        }
        self.mine.remove(&spec.path);
        match self.registry.add_opened(spec.clone(), stores).await {
            Ok(Added::Added) => {
                tracing::info!(database = %database, "restarted on its new settings");
                self.mine.insert(spec.path.clone(), spec);
            }
            // The socket or a watched directory registered it meanwhile: theirs.
            Ok(Added::AlreadyPresent) => {
                tracing::warn!(database = %database, "registered meanwhile by another way; its new settings were not applied")
            }
            Err(e) => tracing::error!(database = %database, "not restarted on its new settings: {e:#}"),
        }
    }

    async fn add(&mut self, spec: DatabaseSpec) {
        let database = spec.path.display().to_string();
        match self.registry.add(spec.clone()).await {
            Ok(Added::Added) => {
                tracing::info!(database = %database, "added from the config file");
                self.mine.insert(spec.path.clone(), spec);
            }
            // Registered through the socket or a watched directory: theirs.
            Ok(Added::AlreadyPresent) => {
                tracing::info!(database = %database, "in the config file now, but already replicating; left as it is")
            }
            Err(e) => tracing::error!(database = %database, "not added: {e:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str, monitor_ms: u64) -> DatabaseSpec {
        DatabaseSpec {
            idle_timeout: None,
            path: PathBuf::from(path),
            meta_path: None,
            monitor_interval: Duration::from_millis(monitor_ms),
            capture: Default::default(),
            restore_if_db_not_exists: false,
            validation_interval: None,
            replicas: Vec::new(),
        }
    }

    #[test]
    fn added_removed_changed_unchanged() {
        let before: BTreeMap<PathBuf, DatabaseSpec> =
            [spec("/a", 1000), spec("/b", 1000), spec("/c", 1000)].into_iter().map(|s| (s.path.clone(), s)).collect();
        let after = [spec("/a", 1000), spec("/c", 500), spec("/d", 1000)];
        let changes = diff_dbs(&before, &after);
        assert_eq!(changes.added, vec![spec("/d", 1000)]);
        assert_eq!(changes.removed, vec![PathBuf::from("/b")]);
        assert_eq!(changes.changed, vec![spec("/c", 500)]);
        assert_eq!(changes.unchanged, 1);
        assert_eq!(diff_dbs(&before, &[spec("/a", 1000), spec("/b", 1000), spec("/c", 1000)]).unchanged, 3);
    }
}
