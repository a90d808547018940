//! The databases of a `replicate` run, which may change while it runs
//! (the control socket's `register`/`unregister`/`start`/`stop`, a
//! watched `dir`): each database runs its own loop (`run_db`) under a
//! shutdown signal of its own, so one can be stopped, with its final
//! sync, while the others go on.
//!
//! Two locks: the map's, held only to find or insert an entry, never
//! across an await that waits on a loop; and each entry's own, held for a
//! whole operation on it (a stop waits for the final sync), so a `start`
//! cannot open a second capture of a database whose first is still
//! finishing.

use super::live::{Live, State};
use super::{Common, Options, Plugins, open_stores, run_db};
use crate::config::DatabaseSpec;
use crate::file_watch::FileWatch;
use crate::plugin::{PluginStore, Runtime};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, Notify, watch};
use tokio::task::JoinHandle;

/// A database's running loop.
struct Loop {
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// A database's running loop, behind the lock that serialises operations on it.
type Op = Arc<Mutex<Option<Loop>>>;

struct Entry {
    spec: DatabaseSpec,
    live: Arc<Live>,
    /// Serialises operations on this database.
    op: Op,
    /// Removed, its final sync still running past the timeout: `reap`
    /// forgets it once that ends.
    removed: bool,
}

/// What `add` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    Added,
    AlreadyPresent,
}

/// What `start` or `stop` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toggled {
    /// It changed the database's state.
    Done,
    /// The database already was in the state asked for.
    Already,
}

/// One database, as `list` shows it.
#[derive(Debug, Clone)]
pub struct Summary {
    pub path: PathBuf,
    pub state: State,
    /// When a replica last stored something (ms since the epoch).
    pub last_sync_ms: Option<i64>,
    pub txid: u64,
}

/// See the module documentation.
pub struct Registry {
    runtime: Arc<Runtime>,
    plugins: Plugins,
    common: Common,
    files: Option<Arc<FileWatch>>,
    dbs: Mutex<BTreeMap<PathBuf, Entry>>,
    /// Shutdown began: nothing starts any more.
    closing: AtomicBool,
    /// A loop ended (on its own, or asked to).
    ended: Arc<Notify>,
    /// Changes under way that stop a database to start it again (a
    /// reload): meanwhile the run does not end for want of databases.
    changing: std::sync::atomic::AtomicUsize,
    /// When the run started (ms since the epoch).
    pub started_ms: i64,
}

impl Registry {
    pub fn new(runtime: Arc<Runtime>, opts: Options) -> Arc<Registry> {
        let files = if opts.once { None } else { FileWatch::new() };
        Arc::new(Registry {
            runtime,
            plugins: Plugins::default(),
            common: Common { health: super::Health::default(), opts, awake: super::awake::Awake::for_this_process() },
            files,
            dbs: Mutex::new(BTreeMap::new()),
            closing: AtomicBool::new(false),
            ended: Arc::new(Notify::new()),
            changing: std::sync::atomic::AtomicUsize::new(0),
            started_ms: crate::clock::now_ms(),
        })
    }

    /// Hold the run open while databases are stopped and started again
    /// (see `changing`); dropping the guard lets it end if none is left.
    pub fn changing(self: &Arc<Self>) -> ChangeGuard {
        self.changing.fetch_add(1, Ordering::SeqCst);
        ChangeGuard(self.clone())
    }

    pub(super) fn options(&self) -> &Options {
        &self.common.opts
    }

    /// Open `spec`'s replica stores (load plugins, prepare sandboxes); an
    /// error is the configuration's.
    pub async fn open(&self, spec: &DatabaseSpec) -> anyhow::Result<Vec<PluginStore>> {
        open_stores(&self.runtime, &self.plugins, spec, self.common.opts.default_plugin.as_deref()).await
    }

    pub(super) fn health(&self) -> super::Health {
        self.common.health.clone()
    }

    /// Open `spec`'s replica stores and start replicating it. An error is
    /// the configuration's (no plugin for a URL, a sandbox that cannot be
    /// prepared), and nothing was added.
    pub async fn add(&self, spec: DatabaseSpec) -> anyhow::Result<Added> {
        let stores = self.open(&spec).await?;
        self.add_opened(spec, stores).await
    }

    /// `add`, with the stores already open.
    pub async fn add_opened(&self, spec: DatabaseSpec, stores: Vec<PluginStore>) -> anyhow::Result<Added> {
        // The entry goes in first, its operation lock held while the loop
        // starts: two callers adding one path (the socket and a watched
        // directory) must never open two captures of it.
        let op = Arc::new(Mutex::new(None));
        let mut running = op.clone().lock_owned().await;
        let live = Live::new();
        {
            let mut dbs = self.dbs.lock().await;
            // Under the map's lock, as `run` sets it: an entry added after
            // shutdown took its list would get no final sync.
            if self.closing.load(Ordering::SeqCst) {
                anyhow::bail!("sluice is shutting down; {} was not added", spec.path.display());
            }
            match dbs.get(&spec.path) {
                Some(e) if e.removed => return Err(removing(&spec.path)),
                Some(_) => return Ok(Added::AlreadyPresent),
                None => {}
            }
            dbs.insert(spec.path.clone(), Entry { spec: spec.clone(), live: live.clone(), op, removed: false });
        }
        *running = Some(self.spawn(&spec, live, stores));
        Ok(Added::Added)
    }

    /// Spawn the loop of `spec` on its open stores.
    fn spawn(&self, spec: &DatabaseSpec, live: Arc<Live>, stores: Vec<PluginStore>) -> Loop {
        let (stop, shutdown) = watch::channel(false);
        let wake = self.files.as_ref().map(|f| f.subscribe(&spec.path));
        let (common, spec, ended) = (self.common.clone(), spec.clone(), self.ended.clone());
        let task = tokio::spawn(async move {
            let result = run_db(common, spec, stores, shutdown, wake, live.clone()).await;
            live.set_state(State::Stopped);
            ended.notify_one();
            result
        });
        Loop { stop, task }
    }

    /// The entry of `path`: its live view, spec and operation lock.
    async fn entry(&self, path: &Path) -> Option<(Arc<Live>, DatabaseSpec, Arc<Mutex<Option<Loop>>>)> {
        let dbs = self.dbs.lock().await;
        dbs.get(path).map(|e| (e.live.clone(), e.spec.clone(), e.op.clone()))
    }

    /// Whether `path` was removed and is still finishing its final sync.
    /// Read under the entry's operation lock, which `remove` holds while
    /// it sets the mark.
    async fn being_removed(&self, path: &Path) -> bool {
        self.dbs.lock().await.get(path).is_some_and(|e| e.removed)
    }

    pub async fn live(&self, path: &Path) -> Option<Arc<Live>> {
        self.entry(path).await.map(|(live, _, _)| live)
    }

    /// Stop replicating `path` (its final sync included, for up to
    /// `timeout`), keeping it registered. `None`: not registered. An error:
    /// the final sync failed or did not finish in time.
    pub async fn stop(&self, path: &Path, timeout: Duration) -> Option<anyhow::Result<Toggled>> {
        let (_, _, op) = self.entry(path).await?;
        let mut running = op.lock().await;
        if self.being_removed(path).await {
            return Some(Err(removing(path)));
        }
        if running.is_none() {
            return Some(Ok(Toggled::Already));
        }
        Some(finish(path, &mut running, timeout).await.map(|_| Toggled::Done))
    }

    /// Start replicating `path` again after a `stop`. `None`: not registered.
    pub async fn start(&self, path: &Path) -> Option<anyhow::Result<Toggled>> {
        let (live, spec, op) = self.entry(path).await?;
        let mut running = op.lock().await;
        if self.being_removed(path).await {
            return Some(Err(removing(path)));
        }
        if let Some(l) = running.as_ref().filter(|l| !l.task.is_finished()) {
            if *l.stop.borrow() {
                return Some(Err(anyhow::anyhow!(
                    "{} is still finishing the final sync of an earlier stop; try again later",
                    path.display()
                )));
            }
            return Some(Ok(Toggled::Already));
        }
        if self.closing.load(Ordering::SeqCst) {
            return Some(Err(anyhow::anyhow!("sluice is shutting down")));
        }
        if let Some(ended) = running.take()
            && let Err(e) = joined(ended.task.await)
        {
            // It ended on its own: its error, then a fresh start.
            tracing::error!("{e:#}");
        }
        Some(self.open(&spec).await.map(|stores| {
            live.set_state(State::Opening);
            *running = Some(self.spawn(&spec, live, stores));
            Toggled::Done
        }))
    }

    /// Stop replicating `path` (as `stop`) and forget it. `None`: not
    /// registered.
    pub async fn remove(&self, path: &Path, timeout: Duration) -> Option<anyhow::Result<()>> {
        let (_, _, op) = self.entry(path).await?;
        let mut running = op.lock().await;
        let result = finish(path, &mut running, timeout).await;
        if running.is_none() {
            // (Another remove may have gone first while this one waited.)
            self.forget(path).await;
        } else if let Some(e) = self.dbs.lock().await.get_mut(path) {
            e.removed = true;
        }
        Some(result)
    }

    /// Drop `path`'s entry and its metric series.
    async fn forget(&self, path: &Path) {
        self.dbs.lock().await.remove(path);
        crate::metrics::forget_database(&path.display().to_string());
    }

    pub async fn list(&self) -> Vec<Summary> {
        let dbs = self.dbs.lock().await;
        dbs.iter()
            .map(|(path, e)| Summary {
                path: path.clone(),
                state: e.live.state(),
                last_sync_ms: e.live.last_sync_ms(),
                txid: e.live.txid(),
            })
            .collect()
    }

    pub async fn count(&self) -> usize {
        self.dbs.lock().await.len()
    }

    /// Paths registered now.
    pub async fn paths(&self) -> Vec<PathBuf> {
        self.dbs.lock().await.keys().cloned().collect()
    }

    /// Replicate until `shutdown`, then stop every database (each with
    /// its final sync) and return the first error. Without `keep_alive`
    /// (no control socket, no watched directory, or `-once`), the run also
    /// ends once every loop has ended on its own: only errors (or
    /// `-once`'s single sync) end one, and nothing could start another.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>, keep_alive: bool) -> anyhow::Result<()> {
        let mut first_error = None;
        loop {
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = self.ended.notified() => {}
            }
            self.reap(&mut first_error).await;
            if *shutdown.borrow() || (!keep_alive && self.all_ended().await) {
                break;
            }
        }
        let entries: Vec<(PathBuf, Op, bool)> = {
            let dbs = self.dbs.lock().await;
            self.closing.store(true, Ordering::SeqCst);
            dbs.iter().map(|(p, e)| (p.clone(), e.op.clone(), e.removed)).collect()
        };
        // Every loop hears the shutdown at once and syncs concurrently;
        // each bounds its own final sync (shutdown-sync-timeout).
        let mut stopping = Vec::new();
        for (path, op, removed) in entries {
            let mut running = op.lock_owned().await;
            if let Some(task) = running.take() {
                let _ = task.stop.send(true);
                stopping.push((path, task.task, removed));
            }
        }
        for (path, task, removed) in stopping {
            match joined(task.await) {
                // Said at its removal; the exit code is about the rest.
                Err(e) if removed => {
                    tracing::warn!(database = %path.display(), "removed: its final sync has ended: {e:#}")
                }
                Err(e) => {
                    tracing::error!("{e:#}");
                    first_error.get_or_insert(e.context(format!("database {}", path.display())));
                }
                Ok(()) => {}
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Collect loops that ended on their own, logging their errors, and
    /// forget removed databases whose final sync has now ended. Those
    /// were reported at their removal and do not fail the run.
    async fn reap(&self, first_error: &mut Option<anyhow::Error>) {
        let entries: Vec<(PathBuf, Op)> =
            self.dbs.lock().await.iter().map(|(p, e)| (p.clone(), e.op.clone())).collect();
        for (path, op) in entries {
            // An entry busy with an operation is that operation's to reap.
            let Ok(mut running) = op.try_lock() else { continue };
            let removed = self.being_removed(&path).await;
            if removed && running.is_none() {
                self.forget(&path).await;
                continue;
            }
            let Some(task) = running.take_if(|l| l.task.is_finished()) else { continue };
            let result = joined(task.task.await);
            if removed {
                self.forget(&path).await;
                match result {
                    Ok(()) => tracing::info!(database = %path.display(), "removed: its final sync has now ended"),
                    Err(e) => tracing::warn!(database = %path.display(), "removed: its final sync has ended: {e:#}"),
                }
            } else if let Err(e) = result {
                tracing::error!("{e:#}");
                first_error.get_or_insert(e);
            }
        }
    }

    async fn all_ended(&self) -> bool {
        if self.changing.load(Ordering::SeqCst) > 0 {
            return false;
        }
        let dbs = self.dbs.lock().await;
        dbs.values().all(|e| e.live.state() == State::Stopped)
    }
}

/// See `Registry::changing`.
pub struct ChangeGuard(Arc<Registry>);

impl Drop for ChangeGuard {
    fn drop(&mut self) {
        self.0.changing.fetch_sub(1, Ordering::SeqCst);
        // The run re-checks whether any database is left.
        self.0.ended.notify_one();
    }
}

/// Ask the loop in `running` to stop and wait for it (its final sync) up
/// to `timeout`. A loop still finishing then stays in `running` (it ends
/// on its own deadline, shutdown-sync-timeout), so that no second loop
/// captures the database beside it meanwhile.
async fn finish(path: &Path, running: &mut Option<Loop>, timeout: Duration) -> anyhow::Result<()> {
    let Some(task) = running.as_mut() else { return Ok(()) };
    let _ = task.stop.send(true);
    match tokio::time::timeout(timeout, &mut task.task).await {
        Ok(result) => {
            *running = None;
            joined(result)
        }
        Err(_) => anyhow::bail!(
            "{}: the final sync did not finish within {timeout:?}; it goes on, and the database stays listed until it ends",
            path.display()
        ),
    }
}

/// Why an operation on a database being removed is refused.
fn removing(path: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{} is being removed and is still finishing its final sync; try again once `sluice list` no longer shows it",
        path.display()
    )
}

fn joined(result: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    result.map_err(|e| anyhow::anyhow!("a database's loop panicked: {e}"))?
}
