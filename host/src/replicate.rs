//! The replication loop: per database, watch the WAL, capture into the
//! spool, checkpoint, and feed one task per replica. Capture never waits
//! for a replica; the spool is bounded, and a replica that falls out of it
//! gets a snapshot instead.

use crate::capture::{CaptureError, Capturer, Durable, list_spool};
use crate::config::DatabaseSpec;
use crate::metrics;
use crate::plugin::{PluginStore, Runtime};
use crate::replica::{ReplicaSettings, ReplicaShared, ReplicaTask};
use crate::state::MetaDir;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

mod awake;
mod dir_watch;
mod heartbeat;
mod live;
mod pace;
mod registry;
mod reload;
mod start;
mod sync;
pub use dir_watch::watch_dir;
use heartbeat::{Health, heartbeat};
pub use live::{Live, State, SyncReport};
use pace::{Pacer, RepeatFilter, SyncOutcome};
pub use registry::{Added, Registry, Summary, Toggled};
pub use reload::{Reloader, diff_dbs};
pub use start::{Plugins, open_store};
use start::{open_stores, open_when_present};
use sync::{Synced, ValidationClock, rest_once, sync_once};

/// Local spool ceiling per database. Past it the oldest level-0 segments
/// go, and replicas that still needed them catch up with a snapshot:
/// local disk stays bounded whatever the replicas do (#784, #927).
pub const MAX_SPOOL_BYTES: u64 = 1 << 30;
/// How long the first sync waits for replicas to learn what they hold.
const READY_WAIT: Duration = Duration::from_secs(10);
/// How often a finished replicator checks that replicas caught up.
const CATCH_UP_POLL: Duration = Duration::from_millis(50);
/// Options of a `replicate` run.
#[derive(Debug, Clone)]
pub struct Options {
    /// One sync, ship it, exit (cron use).
    pub once: bool,
    /// Snapshot every database at start.
    pub force_snapshot: bool,
    /// How long the final sync may take at shutdown.
    pub shutdown_sync_timeout: Duration,
    /// A plugin for every replica that names none (`--plugin`).
    pub default_plugin: Option<PathBuf>,
    /// `heartbeat-url` and interval.
    pub heartbeat: Option<(String, Duration)>,
}

/// Open every replica's store of every database before anything starts: a
/// configuration error (no plugin for a URL, a plugin that does not load, a
/// sandbox that cannot be prepared) ends the run at once, naming database
/// and replica, as Litestream's "unknown replica type" does, instead of
/// leaving a process that replicates less than its configuration says.
/// Then start each database's loop.
pub async fn prepare(runtime: Arc<Runtime>, dbs: Vec<DatabaseSpec>, opts: Options) -> anyhow::Result<Arc<Registry>> {
    let registry = Registry::new(runtime, opts);
    let mut opened = Vec::with_capacity(dbs.len());
    for spec in dbs {
        let stores = registry.open(&spec).await?;
        opened.push((spec, stores));
    }
    for (spec, stores) in opened {
        registry.add_opened(spec, stores).await?;
    }
    Ok(registry)
}

/// Replicate the registry's databases until `shutdown` (or once); see
/// `Registry::run` for `keep_alive`.
pub async fn run(registry: Arc<Registry>, shutdown: watch::Receiver<bool>, keep_alive: bool) -> anyhow::Result<()> {
    if let Some((url, every)) = registry.options().heartbeat.clone() {
        tokio::spawn(heartbeat(url, every, registry.health(), shutdown.clone()));
    }
    registry.run(shutdown, keep_alive).await
}

struct Replica {
    name: String,
    database: String,
    shared: Arc<ReplicaShared>,
}

/// Sleep until the pacer's next look, a file-watch notification it
/// listens for (then until its batch allows the sync), or shutdown.
/// Meanwhile, each time a replica ships something, `shipped` runs, so the
/// spool and metrics catch up without waiting for a commit.
async fn wait_for_next_look(
    pacer: &mut Pacer<Stamp>,
    wake: Option<&crate::file_watch::Subscription>,
    shutdown: &mut watch::Receiver<bool>,
    live: &Live,
    replicas: &[Replica],
    shipped: impl Fn() -> bool,
    crowding: Option<&awake::Awake>,
) {
    let next = pacer.next_look(tokio::time::Instant::now());
    let resting = pacer.is_resting();
    let notified = async {
        match wake {
            Some(w) if next.listen => w.changed().await,
            _ => std::future::pending().await,
        }
    };
    let mut woke = false;
    tokio::pin!(notified);
    loop {
        // (`select_all` wants at least one future.)
        let news = async {
            match replicas.is_empty() {
                true => std::future::pending().await,
                false => {
                    futures::future::select_all(replicas.iter().map(|r| Box::pin(r.shared.shipped_news.notified())))
                        .await
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next.at) => {}
            _ = &mut notified => woke = true,
            _ = shutdown.changed() => {}
            // A sync asked for (control socket) is not held to the batch.
            _ = live.requested() => return,
            // Databases wait for a permit: look whether this one can rest.
            _ = async { match crowding { Some(a) => a.crowding().await, None => std::future::pending().await } } => return,
            // A replica shipped (the spool is freed), or its snapshot
            // interval passed: a resting database takes it now, not at
            // the next look (minutes away). An awake one takes it at its
            // next look, as before: taken at once in the middle of a busy
            // spell, the snapshot fell inside level-1 ranges, which the
            // restore planner cannot start from, and restore points of the
            // engine test's retention window became unreachable.
            _ = news => {
                if shipped() && resting {
                    return;
                }
                continue;
            }
        }
        break;
    }
    if woke && !*shutdown.borrow() {
        tokio::select! {
            _ = tokio::time::sleep_until(pacer.woke()) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// The database's and its WAL's sizes and modification times: a look
/// syncs when they changed since the last sync.
type Stamp = Option<(u64, SystemTime, u64, SystemTime)>;

/// Whether a stamp read just now tells every later write apart: the
/// coarse clock is past both files' times (`fsutil::coarse_clock_past`),
/// or, on a filesystem keeping whole seconds (times in whole
/// milliseconds, `fsutil::fine_grained`), past them by
/// `COARSE_TIMES_GRAIN`. No stamp (the database is gone) has nothing to
/// tell.
fn stamp_settled(stamp: &Stamp) -> bool {
    let ns = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64);
    let until = |t: i64| if crate::fsutil::fine_grained((0, t)) { t } else { t + COARSE_TIMES_GRAIN };
    stamp.is_none_or(|(_, wal, _, db)| crate::fsutil::coarse_clock_past(until(ns(wal)).max(until(ns(db)))))
}

/// How long a file time in whole milliseconds may stand for, in ns: vfat
/// keeps two seconds.
const COARSE_TIMES_GRAIN: i64 = 2_000_000_000;

fn wal_stamp(db: &Path) -> Stamp {
    let w = std::fs::metadata(crate::db::wal_path(db)).ok();
    let d = std::fs::metadata(db).ok()?;
    Some((
        w.as_ref().map_or(0, |m| m.len()),
        w.and_then(|m| m.modified().ok()).unwrap_or(SystemTime::UNIX_EPOCH),
        d.len(),
        d.modified().ok()?,
    ))
}

/// What the loops of every database share.
#[derive(Clone)]
struct Common {
    health: Health,
    opts: Options,
    /// Permits to have a database's files open (decision 29).
    awake: Arc<awake::Awake>,
}

/// One database being replicated: its capture and its replicas' tasks.
struct Running {
    database: String,
    capturer: Arc<Mutex<Capturer>>,
    meta: MetaDir,
    replicas: Vec<Replica>,
    handles: Vec<tokio::task::JoinHandle<()>>,
    /// What capture has made durable, as the replica tasks see it.
    txid_tx: watch::Sender<Durable>,
    /// Tells the replica tasks to stop once they have shipped.
    stop_tx: watch::Sender<bool>,
    /// What the registry sees of this loop, and its requests.
    live: Arc<Live>,
}

/// Replicate one database until `shutdown` (or once): start, the loop of
/// looks and syncs, then the final shipping.
async fn run_db(
    common: Common,
    spec: DatabaseSpec,
    stores: Vec<PluginStore>,
    mut shutdown: watch::Receiver<bool>,
    wake: Option<crate::file_watch::Subscription>,
    live: Arc<Live>,
) -> anyhow::Result<()> {
    let Some((running, permit)) = start_db(&common, &spec, stores, &mut shutdown, live).await? else {
        return Ok(());
    };
    // Held until the database's files close: `finish` may keep them open
    // a while, waiting for the replicas.
    let mut permit = Some(permit);
    let unsynced = running.pace(&spec, &common, &mut shutdown, wake, &mut permit).await;
    let finished = running.finish(&common.opts, unsynced).await;
    drop(permit);
    finished
}

/// Open the database and start the replica tasks; `None`
/// if shut down while waiting for the database to exist.
async fn start_db(
    common: &Common,
    spec: &DatabaseSpec,
    stores: Vec<PluginStore>,
    shutdown: &mut watch::Receiver<bool>,
    live: Arc<Live>,
) -> anyhow::Result<Option<(Running, awake::Permit)>> {
    let database = spec.path.display().to_string();
    let meta_dir = spec.meta_path.clone().unwrap_or_else(|| MetaDir::default_for(&spec.path));
    let opened = open_when_present(spec, meta_dir, shutdown, common.opts.once, &common.awake).await?;
    let Some((capturer, permit)) = opened else {
        return Ok(None);
    };
    let meta = capturer.meta().clone();
    let capturer = Arc::new(Mutex::new(capturer));

    let recorded = capturer.lock().map(|c| c.state().txid).unwrap_or(0);
    let (txid_tx, txid_rx) = watch::channel(Durable { txid: recorded, fresh: None });
    let (stop_tx, stop_rx) = watch::channel(false);
    let channels = TaskChannels { durable: txid_rx, shutdown: shutdown.clone(), stop: stop_rx };
    let (replicas, handles) = start_replicas(common, spec, stores, &meta, channels);
    live.set_replicas(replicas.iter().map(|r| r.shared.clone()).collect());
    live.record_sync(None, recorded, None);
    live.set_state(live::State::Replicating);
    tracing::info!(database = %database, replicas = replicas.len(), "replicating");
    let resume = capturer.lock().map(|c| c.resume_pending()).unwrap_or(false);
    wait_until_ready(spec, &replicas, common.opts.once, resume).await;
    continue_after_replicas(&capturer, &replicas);
    Ok(Some((Running { database, capturer, meta, replicas, handles, txid_tx, stop_tx, live }, permit)))
}

/// What a replica task listens to.
struct TaskChannels {
    /// What capture has made durable.
    durable: watch::Receiver<Durable>,
    shutdown: watch::Receiver<bool>,
    /// Stop once shipped.
    stop: watch::Receiver<bool>,
}

/// Spawn one task per replica of `spec`, each with its store.
fn start_replicas(
    common: &Common,
    spec: &DatabaseSpec,
    stores: Vec<PluginStore>,
    meta: &MetaDir,
    channels: TaskChannels,
) -> (Vec<Replica>, Vec<tokio::task::JoinHandle<()>>) {
    let database = spec.path.display().to_string();
    let mut replicas = Vec::new();
    let mut handles = Vec::new();
    for (r, store) in spec.replicas.iter().zip(stores) {
        let settings = ReplicaSettings {
            name: r.name.clone(),
            sync_interval: r.sync_interval,
            snapshot_interval: r.snapshot_interval,
            retention: r.retention.clone(),
            compaction: r.compaction.clone(),
            lease_timeout: r.lease_timeout,
            lease: r.lease,
            once: common.opts.once,
        };
        let task = ReplicaTask::new(store, settings, meta.clone());
        replicas.push(Replica { name: r.name.clone(), database: database.clone(), shared: task.shared.clone() });
        common.health.add(&task.shared);
        let TaskChannels { durable, shutdown, stop } = &channels;
        handles.push(tokio::spawn(task.run(durable.clone(), shutdown.clone(), stop.clone())));
    }
    (replicas, handles)
}

/// Know which replicas need a snapshot before the first sync (matters for
/// -once, which syncs exactly once). A replica waiting for another
/// process's lease is ready at once; under -once, one whose holder looks
/// dead is waited for while it makes sure (up to its lease timeout;
/// decision 17).
async fn wait_until_ready(spec: &DatabaseSpec, replicas: &[Replica], once: bool, resume: bool) {
    let lease_wait = if once { spec.replicas.iter().filter(|r| r.lease).map(|r| r.lease_timeout).max() } else { None };
    let ready_by = tokio::time::Instant::now() + READY_WAIT + lease_wait.unwrap_or_default();
    // A gap found at start is bridged by a resume only once every replica
    // was listed (decision 19): wait for that too, for up to READY_WAIT,
    // unless a replica is another process's (then it will not be listed,
    // and a snapshot is due).
    let listed_by = tokio::time::Instant::now() + READY_WAIT;
    let unlisted = |r: &Replica| !r.shared.listed.load(Ordering::SeqCst) && !r.shared.locked_out.load(Ordering::SeqCst);
    loop {
        let now = tokio::time::Instant::now();
        let unready = replicas.iter().any(|r| !r.shared.ready.load(Ordering::SeqCst)) && now < ready_by;
        let unlisted = resume && replicas.iter().any(unlisted) && now < listed_by;
        if !(unready || unlisted) {
            break;
        }
        tokio::time::sleep(CATCH_UP_POLL).await;
    }
}

impl Running {
    /// Look, sync and sleep until `shutdown` (or once); the decisions are
    /// `Pacer`'s, this is the I/O around them. Ends with a final sync;
    /// returns its error (or `-once`'s sync's), if it failed.
    async fn pace(
        &self,
        spec: &DatabaseSpec,
        common: &Common,
        shutdown: &mut watch::Receiver<bool>,
        mut wake: Option<crate::file_watch::Subscription>,
        permit: &mut Option<awake::Permit>,
    ) -> Option<String> {
        let Running { capturer, meta, replicas, .. } = self;
        let (opts, awake) = (&common.opts, &common.awake);
        // Writes arriving within this long of a sync wait for the next one.
        let batch = spec.replicas.iter().map(|r| r.sync_interval).min().unwrap_or(spec.monitor_interval);
        let mut pacer = Pacer::new(batch, spec.monitor_interval, opts.force_snapshot, tokio::time::Instant::now())
            .rest_after(spec.idle_timeout.filter(|_| !opts.once));
        if opts.force_snapshot {
            // Every replica is to receive it, including one already at the
            // current TXID (which would otherwise take only newer changes).
            replicas.iter().for_each(|r| r.shared.wants_snapshot.store(true, Ordering::SeqCst));
        }
        let mut validation = ValidationClock::new(spec.validation_interval);
        let mut failures = RepeatFilter::default();
        let mut failed = None;
        loop {
            if continue_after_replicas(capturer, replicas) {
                pacer.look_anyway();
            }
            let asked = self.live.pending_request();
            if asked.is_some() {
                pacer.look_anyway();
            }
            let stamp = wal_stamp(&spec.path);
            // Before the sync reads anything: a write after this, in the
            // stamp's tick, is then in what the sync reads.
            let settled = stamp_settled(&stamp);
            let validate = validation.due(|| capturer.lock().map(|c| c.state().txid).unwrap_or(0));
            if validate {
                pacer.look_anyway();
            }
            if let Some(snapshot) = pacer.should_sync(&stamp, replica_wants_snapshot(replicas, meta)) {
                if permit.is_none() {
                    tokio::select! {
                        p = awake.acquire() => *permit = Some(p),
                        _ = shutdown.changed() => return self.final_sync(awake, permit).await,
                    }
                }
                let started = tokio::time::Instant::now();
                let result = sync_once(capturer, snapshot, validate).await;
                failed = result.as_ref().err().map(|e| format!("{e:#}"));
                let outcome = match result {
                    Ok(synced) => self.synced(synced, &mut validation, &mut failures),
                    Err(e) => self.sync_failed(&e, &mut failures),
                };
                let txid = self.capturer.lock().map(|c| c.state().txid).unwrap_or(0);
                self.live.record_sync(asked, txid, failed.clone());
                pacer.synced(started, stamp, outcome);
                if !settled {
                    pacer.stamp_unsettled();
                }
                collect_spool(meta, replicas);
            }
            if opts.once {
                return failed;
            }
            if pacer.should_rest(tokio::time::Instant::now(), awake.crowded()) {
                let rested = rest_once(capturer, &spec.path).await;
                if rested.is_some() {
                    *permit = None;
                }
                pacer.rested(rested, tokio::time::Instant::now());
            }
            // While writes keep coming the next look is at the end of the
            // batch anyway: notifications would only wake us to wait. Once
            // quiet, arm them, and look once more for a write that slipped in
            // before the watch was in place. A look that found the files
            // changed but nothing committed is quiet too: disarming there made
            // the commit being written wait a whole batch.
            if wake.as_mut().is_some_and(|w| w.arm(pacer.quiet())) {
                pacer.armed();
                continue;
            }
            pacer.watched(wake.as_ref().is_some_and(|w| w.watching()));
            let shipped = || {
                collect_spool(meta, replicas);
                replica_wants_snapshot(replicas, meta)
            };
            let crowding = (permit.is_some() && spec.idle_timeout.is_some()).then_some(awake.as_ref());
            wait_for_next_look(&mut pacer, wake.as_ref(), shutdown, &self.live, replicas, shipped, crowding).await;
            if *shutdown.borrow() {
                if pacer.resting_unchanged(&wal_stamp(&spec.path)) {
                    // Nothing was written since every commit was captured.
                    return None;
                }
                return self.final_sync(awake, permit).await;
            }
        }
    }

    /// Publish a sync's outcome to the replicas, and what it means for
    /// pacing.
    fn synced(&self, synced: Synced, validation: &mut ValidationClock, failures: &mut RepeatFilter) -> SyncOutcome {
        // A mismatch needs its healing snapshot at once.
        let again = validation.record(synced.validation, &self.database, &self.replicas);
        self.txid_tx.send_replace(synced.durable);
        if failures.recovered() {
            tracing::info!(database = %self.database, "sync succeeded again");
        }
        SyncOutcome::Ran { captured: synced.captured, in_flight: synced.in_flight, again }
    }

    /// Log a failed sync (a repeated failure only now and then), and say
    /// how soon to retry it.
    fn sync_failed(&self, e: &anyhow::Error, failures: &mut RepeatFilter) -> SyncOutcome {
        let stuck = e.downcast_ref::<CaptureError>().is_some_and(CaptureError::needs_operator);
        let retry = if stuck { "retried with back-off" } else { "will retry" };
        if let Some(line) = failures.failed(format!("{e:#}"), tokio::time::Instant::now()) {
            tracing::warn!(database = %self.database, "sync failed ({retry}): {line}");
        }
        if stuck { SyncOutcome::Stuck } else { SyncOutcome::Failed }
    }

    /// The sync at shutdown, capturing what the application wrote last;
    /// its error, if it failed.
    async fn final_sync(&self, awake: &awake::Awake, permit: &mut Option<awake::Permit>) -> Option<String> {
        if permit.is_none() {
            *permit = Some(awake.acquire().await);
        }
        match sync_once(&self.capturer, false, false).await {
            Ok(synced) => {
                self.txid_tx.send_replace(synced.durable);
                None
            }
            Err(e) => Some(format!("{e:#}")),
        }
    }

    /// Wait for the replicas to ship what was captured, stop them, and
    /// fail if one is still behind or the last sync (`unsynced`) failed.
    async fn finish(self, opts: &Options, unsynced: Option<String>) -> anyhow::Result<()> {
        let Running { database, capturer, meta, replicas, handles, txid_tx, stop_tx, .. } = self;
        let mut target = capturer.lock().map(|c| c.state().txid).unwrap_or(0);
        wait_for_replicas(&replicas, &meta, target, opts.shutdown_sync_timeout).await;
        if opts.once && replica_wants_snapshot(&replicas, &meta) {
            // A replica found its chain broken only while shipping (a spooled
            // segment dropped or damaged): give it its snapshot now, or this run
            // and every run after it would end the same way.
            match sync_once(&capturer, true, false).await {
                Ok(synced) => {
                    target = synced.durable.txid;
                    txid_tx.send_replace(synced.durable);
                }
                Err(e) => tracing::warn!(database = %database, "snapshot for a replica that needs one failed: {e:#}"),
            }
            wait_for_replicas(&replicas, &meta, target, opts.shutdown_sync_timeout).await;
        }
        collect_spool(&meta, &replicas);
        let _ = stop_tx.send(true);
        for h in handles {
            let _ = h.await;
        }
        let behind: Vec<String> = replicas
            .iter()
            .filter(|r| r.shared.shipped.load(Ordering::SeqCst) < target || r.shared.locked_out.load(Ordering::SeqCst))
            .map(|r| {
                let at = r.shared.shipped.load(Ordering::SeqCst);
                match r.shared.failing() {
                    Some((why, _)) => format!("replica {} is at TXID {at:016x}: {why}", r.name),
                    None => format!("replica {} is at TXID {at:016x}", r.name),
                }
            })
            .collect();
        if let Some(why) = unsynced {
            anyhow::bail!(
                "{database}: the last sync before exit failed, so the latest commits are in no replica ({why}); \
                 the next run captures them from the WAL if it still holds them, or takes a snapshot"
            );
        }
        if !behind.is_empty() {
            anyhow::bail!(
                "not every replica received TXID {target:016x} before exit ({}); the local spool keeps the changes for the next run",
                behind.join("; ")
            );
        }
        Ok(())
    }
}

/// A replica ahead of the capture (local state lost, replicated from
/// another host, or a replica that got its lease late and found another
/// process's TXIDs): continue after its TXIDs with a snapshot rather than
/// reuse them. Such a replica ships nothing until the capture is past
/// them (`ReplicaTask::ship`). True if the capture jumped.
fn continue_after_replicas(capturer: &Arc<Mutex<Capturer>>, replicas: &[Replica]) -> bool {
    let held = replicas.iter().map(|r| r.shared.held.load(Ordering::SeqCst)).max().unwrap_or(0);
    let Ok(mut c) = capturer.lock() else { return false };
    // Until every replica was listed, one may be ahead of the state
    // unseen (a state rolled back by a power failure, another writer):
    // a gap meanwhile takes a snapshot, which needs no base.
    c.replicas_known(replicas.iter().all(|r| r.shared.listed.load(Ordering::SeqCst)));
    if held <= c.state().txid {
        return false;
    }
    c.continue_after(held);
    true
}

fn replica_wants_snapshot(replicas: &[Replica], meta: &MetaDir) -> bool {
    // Asked every loop: list the spool only when a replica does want one.
    if !replicas.iter().any(|r| r.shared.wants_snapshot.load(Ordering::SeqCst)) {
        return false;
    }
    let spool = list_spool(&meta.spool()).unwrap_or_default();
    replicas.iter().any(|r| {
        let shipped = r.shared.shipped.load(Ordering::SeqCst);
        r.shared.wants_snapshot.load(Ordering::SeqCst)
            && !spool.iter().any(|e| e.name.is_snapshot() && e.name.max_txid >= shipped)
    })
}

/// Drop spooled segments every replica has, and keep the spool bounded.
fn collect_spool(meta: &MetaDir, replicas: &[Replica]) {
    for r in replicas {
        if let Some(db) = metrics::shown(&r.database) {
            metrics::REPLICA_TXID.with_label_values(&[db, &r.name]).set(r.shared.shipped.load(Ordering::SeqCst) as f64);
        }
    }
    let Ok(spool) = list_spool(&meta.spool()) else { return };
    let low = replicas.iter().map(|r| r.shared.shipped.load(Ordering::SeqCst)).min().unwrap_or(0);
    let newest_snapshot = spool.iter().filter(|e| e.name.is_snapshot()).map(|e| e.name.max_txid).max();
    let mut total: u64 = 0;
    let mut keep = Vec::new();
    // A snapshot a replica asked for stays until it is up, even when that
    // replica already holds its TXID (an idle database's snapshot
    // interval passing): dropped as "had", it was asked for again at once.
    let wanted = |e: &crate::capture::SpoolEntry| {
        e.name.is_snapshot()
            && replicas.iter().any(|r| {
                r.shared.wants_snapshot.load(Ordering::SeqCst)
                    && r.shared.shipped.load(Ordering::SeqCst) <= e.name.max_txid
            })
    };
    for e in &spool {
        let superseded = e.name.is_snapshot() && newest_snapshot.is_some_and(|n| n > e.name.max_txid);
        if (e.name.max_txid <= low && !wanted(e)) || superseded {
            let _ = std::fs::remove_file(&e.path);
        } else {
            total += e.size;
            keep.push(e);
        }
    }
    for e in keep {
        if total <= MAX_SPOOL_BYTES {
            break;
        }
        if e.name.is_snapshot() {
            continue;
        }
        tracing::warn!(
            "spool of {} is over {} MiB: dropping {} (a lagging replica will get a snapshot)",
            meta.path().display(),
            MAX_SPOOL_BYTES >> 20,
            e.name
        );
        if std::fs::remove_file(&e.path).is_ok() {
            total -= e.size;
        }
    }
}

/// Wait until every replica has `target`, or until the ones that lack it
/// all fail in a way no retry fixes, or one waits for a snapshot no sync
/// has taken yet, or the timeout.
async fn wait_for_replicas(replicas: &[Replica], meta: &MetaDir, target: u64, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let lagging: Vec<&Replica> =
            replicas.iter().filter(|r| r.shared.shipped.load(Ordering::SeqCst) < target).collect();
        let hopeless = lagging.iter().all(|r| r.shared.failing().is_some_and(|(_, retryable)| !retryable));
        let stalled = replica_wants_snapshot(replicas, meta);
        if lagging.is_empty() || hopeless || stalled || tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(CATCH_UP_POLL).await;
    }
}
