//! Starting a run: every replica's store is opened before anything
//! starts (a configuration error ends the run at once), then each
//! database is opened when it exists and can be, retried with back-off
//! while it cannot.

use super::awake::{Awake, Permit};
use super::pace::RepeatFilter;
use crate::capture::Capturer;
use crate::config::{DatabaseSpec, ReplicaSpec};
use crate::plugin::{Labels, LoadedPlugin, PluginStore, Runtime, bundled};
use anyhow::Context;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Pauses between attempts to open a database that exists but cannot be
/// opened (not a database yet, locked exclusively, unreadable, its meta
/// directory not writable): doubling from the first to the last, so a
/// condition that passes (an application finishing its first write, an
/// operator fixing a permission) is noticed soon, and one that lasts costs
/// a try every half minute, logged once every few minutes.
const OPEN_RETRY_FIRST: Duration = Duration::from_secs(1);
const OPEN_RETRY_MAX: Duration = Duration::from_secs(30);

/// Loaded plugins shared by all replicas of a run: one compile each.
#[derive(Default)]
pub struct Plugins {
    loaded: tokio::sync::Mutex<HashMap<String, Arc<LoadedPlugin>>>,
}

impl Plugins {
    pub async fn for_replica(
        &self,
        runtime: &Arc<Runtime>,
        explicit: Option<&Path>,
        url: &str,
    ) -> anyhow::Result<Arc<LoadedPlugin>> {
        let key = match explicit {
            Some(p) => p.display().to_string(),
            None => format!(
                "bundled:{}",
                bundled::for_url(url).with_context(|| format!(
                    "no bundled plugin serves {}; set `plugin:` to a .wasm for this store",
                    crate::plugin::redact_url(url)
                ))?
            ),
        };
        let mut loaded = self.loaded.lock().await;
        if let Some(p) = loaded.get(&key) {
            return Ok(p.clone());
        }
        let plugin = match explicit {
            Some(p) => runtime.load_file(p).await?,
            None => runtime.load_bundled(key.trim_start_matches("bundled:")).await?,
        };
        loaded.insert(key, plugin.clone());
        Ok(plugin)
    }
}

/// Open a replica's store (plugin, sandbox, labels).
pub async fn open_store(
    runtime: &Arc<Runtime>,
    plugins: &Plugins,
    spec: &ReplicaSpec,
    default_plugin: Option<&Path>,
    database: &str,
) -> anyhow::Result<PluginStore> {
    let plugin = plugins
        .for_replica(runtime, spec.plugin.as_deref().or(default_plugin), &spec.url)
        .await
        .with_context(|| format!("database {database} replica {}", spec.name))?;
    let sandbox = spec
        .sandbox
        .resolve(&plugin, &spec.url, &spec.settings)
        .with_context(|| format!("database {database} replica {}: cannot prepare the plugin sandbox", spec.name))?;
    let labels = Labels { plugin: String::new(), database: database.to_string(), replica: spec.name.clone() };
    let store = PluginStore::new(plugin, spec.url.clone(), spec.settings.clone(), sandbox, labels)?;
    // What the store can do decides the lease's and the uploads' form.
    store.learn_capabilities().await?;
    Ok(store.with_keys(spec.age.clone()))
}

/// Refuse a replica whose plugin would get a directory that holds the
/// database: a plugin runs in this process, and its closing any descriptor
/// of the database or its `-shm` (by mistake, or as a hostile tenant's
/// plugin on purpose) would release the SQLite locks capture depends on
/// (see `crate::db`).
fn refuse_directory_holding(db: &Path, store: &PluginStore, replica: &str) -> anyhow::Result<()> {
    let Some(dir) = &store.sandbox().directory else { return Ok(()) };
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    // SQLite follows a symlinked database to its real file, beside which
    // the -wal and -shm live.
    let db_dir = canonical(db).parent().map(Path::to_path_buf).unwrap_or_default();
    if db_dir.starts_with(canonical(dir)) {
        anyhow::bail!(
            "database {} replica {replica}: the replica directory {} holds the database, and its plugin could reach the database's files; put the replica in a directory outside {}",
            db.display(),
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Open every replica's store of `spec` (load its plugin, prepare its
/// sandbox). A failure is the configuration's, for the operator to fix.
pub async fn open_stores(
    runtime: &Arc<Runtime>,
    plugins: &Plugins,
    spec: &DatabaseSpec,
    default_plugin: Option<&Path>,
) -> anyhow::Result<Vec<PluginStore>> {
    let database = spec.path.display().to_string();
    let mut stores = Vec::new();
    for r in &spec.replicas {
        let store = open_store(runtime, plugins, r, default_plugin, &database).await?;
        refuse_directory_holding(&spec.path, &store, &r.name)?;
        if let Some(dir) = &store.sandbox().directory {
            writable(dir).with_context(|| format!("database {database} replica {}", r.name))?;
        }
        stores.push(store);
    }
    Ok(stores)
}

/// Refuse a replica directory that cannot be written. Inside the sandbox a
/// read-only filesystem reaches the plugin as a bare "I/O error (os error
/// 29)" on its first upload, with no path; here it can be said plainly.
fn writable(dir: &Path) -> anyhow::Result<()> {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).map_err(|e| {
        anyhow::anyhow!(
            "the replica directory {} cannot be written ({}); make it writable or point the replica elsewhere",
            dir.display(),
            std::io::Error::from(e)
        )
    })
}

/// Open the database for capture, waiting for it to appear if it does not
/// exist yet (an application creating it on first start), and retrying
/// with back-off while it cannot be opened (Litestream retries too); the
/// other databases go on meanwhile. `Ok(None)` if shut down while it did
/// not exist; an error if shut down while it could not be opened (the exit
/// code says this database was not replicated), or at once under `-once`.
pub async fn open_when_present(
    spec: &DatabaseSpec,
    meta_dir: PathBuf,
    shutdown: &mut watch::Receiver<bool>,
    once: bool,
    awake: &Awake,
) -> anyhow::Result<Option<(Capturer, Permit)>> {
    let database = spec.path.display().to_string();
    let (mut waiting_logged, mut failures, mut retry) = (false, RepeatFilter::default(), OPEN_RETRY_FIRST);
    let mut last_error = None;
    loop {
        let pause = if spec.path.exists() || once {
            let (path, capture_cfg, meta) = (spec.path.clone(), spec.capture.clone(), meta_dir.clone());
            // Only so many databases open at once (decision 29).
            let permit = tokio::select! {
                permit = awake.acquire() => permit,
                _ = shutdown.changed() => return Ok(None),
            };
            match tokio::task::spawn_blocking(move || Capturer::open(&path, meta, capture_cfg)).await? {
                Ok(capturer) => {
                    if failures.recovered() {
                        tracing::info!(database = %database, "the database opened; replicating");
                    }
                    return Ok(Some((capturer, permit)));
                }
                Err(e) if once => return Err(e.into()),
                Err(e) => {
                    let msg = format!(
                        "cannot open the database: {e}; retrying every {OPEN_RETRY_MAX:?} at most, the other databases go on"
                    );
                    if let Some(line) = failures.failed(msg, Instant::now()) {
                        tracing::error!(database = %database, "{line}");
                    }
                    last_error = Some(e);
                    let pause = retry;
                    retry = (retry * 2).min(OPEN_RETRY_MAX);
                    pause
                }
            }
        } else {
            if !std::mem::replace(&mut waiting_logged, true) {
                tracing::warn!(database = %database, "database does not exist yet; waiting for it to be created");
            }
            spec.monitor_interval
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return match last_error {
                Some(e) => Err(anyhow::anyhow!("the database was never opened, so nothing of it was replicated: {e}")),
                None => Ok(None),
            };
        }
    }
}
