//! One replica's life: ship spooled segments in TXID order, compact levels
//! on their intervals, ask for snapshots, apply retention. Each replica
//! runs on its own, so a slow or failing one delays no other and never the
//! database: capture only ever writes to the local spool.

use super::catch_up;
use super::client::{self, Listing};
use super::compact;
use super::due::{Position, snapshot_due_at, writes_due};
use super::error::{ReplicaError, class_of_chain};
use super::keeper::{Demand, Keeper, lease_flipped, refusal, unleased};
use super::lease::Standing;
use super::quota;
use super::recent::Recent;
use super::retention;
use super::shared::{ReplicaSettings, ReplicaShared};
use super::spell::Spell;
use crate::capture::{Durable, Fresh, SpoolEntry, list_spool, spool_path};
use crate::clock::{boottime, now_ms};
use crate::plugin::PluginStore;
use crate::segment::SegmentName;
use crate::state::{MetaDir, Record};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::watch;

mod ship;
pub use ship::next_to_ship;

/// The longest an idle replica sleeps between passes while its listing
/// is unknown, so that when retention or compaction falls due is too.
const MAX_IDLE_WAIT: Duration = Duration::from_secs(10);

/// The longest an idle replica with a known listing sleeps: it wakes for
/// each compaction with something to compact, each change of what
/// retention deletes and each snapshot due, so this is only a backstop
/// (Litestream checks retention hourly). At 10 s, 10,000 idle replicas
/// made 1,000 passes a second.
const MAX_IDLE_PASS: Duration = Duration::from_secs(3600);

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Persisted {
    shipped: u64,
}

pub struct ReplicaTask {
    pub store: Arc<PluginStore>,
    pub settings: ReplicaSettings,
    pub meta: MetaDir,
    pub shared: Arc<ReplicaShared>,
    /// Where `shipped` persists (`replica-<name>.json`).
    position: Record,
    listing: Option<Listing>,
    last_compaction: Vec<Instant>,
    /// Level-0 segments uploaded from memory, for the next compaction;
    /// kept only while level 0 is compacted at all.
    recent: Recent,
    /// What the lease's keeper says we may do, and the keeper until `run`
    /// starts it.
    lease: watch::Receiver<Standing>,
    keeper: Option<Keeper>,
    /// Tells the keeper when there is something to write.
    demand: Demand,
    /// The lease tenure our listing belongs to.
    lease_generation: u64,
}

/// How a pass ended, when it did not fail.
enum Passed {
    /// Did what there was to do (maybe nothing).
    Done,
    /// Has something to write, and the lease rests: the keeper renews it,
    /// and the next pass writes.
    Waking,
}

impl ReplicaTask {
    pub fn new(store: PluginStore, settings: ReplicaSettings, meta: MetaDir) -> Self {
        let shared = Arc::new(ReplicaShared::default());
        let position = meta.record(&state_name(&settings.name));
        let persisted: Persisted = position.load().unwrap_or_default();
        shared.shipped.store(persisted.shipped, Ordering::SeqCst);
        let levels = settings.compaction.level_intervals.len();
        let store = Arc::new(store);
        let (keeper, lease, demand) = if settings.lease {
            let (keeper, lease, demand) = Keeper::new(store.clone(), settings.lease_timeout, settings.once);
            (Some(keeper), lease, demand)
        } else {
            let (lease, demand) = unleased();
            (None, lease, demand)
        };
        ReplicaTask {
            store,
            settings,
            meta,
            shared,
            position,
            listing: None,
            last_compaction: vec![Instant::now(); levels],
            recent: Recent::default(),
            lease,
            keeper,
            demand,
            lease_generation: 0,
        }
    }

    /// Whether this process may write to the replica now: only while it
    /// holds the lease. A new tenure refetches the listing, since another
    /// process may have written meanwhile.
    fn may_write(&mut self) -> Result<(), ReplicaError> {
        let standing = self.lease.borrow().clone();
        if !standing.holds(boottime()) {
            return Err(refusal(&standing, &self.store, self.settings.lease_timeout));
        }
        if standing.generation != self.lease_generation {
            self.lease_generation = standing.generation;
            self.listing = None;
            self.recent.clear();
        }
        Ok(())
    }

    /// The replica's listing (fetched once, then kept current locally, so
    /// an idle database costs no requests).
    async fn listing(&mut self) -> Result<&mut Listing, ReplicaError> {
        if self.listing.is_none() {
            let listing = client::list(&self.store).await?;
            if listing.is_empty()
                && let Some(backup) = crate::litestream::find(&self.store).await?
            {
                let (replica, what) = (self.settings.name.clone(), backup.describe());
                return Err(ReplicaError::Foreign { replica, what });
            }
            // The replica may be behind our record (a replica wiped by
            // hand) or ahead (another host): trust what it holds.
            let held = listing.keys().map(|n| n.max_txid).max().unwrap_or(0);
            self.shared.held.store(held, Ordering::SeqCst);
            self.shared.listed.store(true, Ordering::SeqCst);
            let shipped = self.shared.shipped.load(Ordering::SeqCst);
            if held < shipped || !listing.keys().any(|n| n.is_snapshot()) {
                // The wish first: the position's news must find it.
                self.shared.want_snapshot();
                self.set_shipped(0)?;
            } else if let Some(reached) = super::plan::chain_broken(&listing, held) {
                tracing::warn!(
                    database = %self.store.labels().database,
                    "replica {}: segments after TXID {reached:016x} are missing (the store lost objects it had accepted, or someone deleted them); a snapshot restores the chain",
                    self.settings.name
                );
                self.shared.want_snapshot();
            }
            self.listing = Some(listing);
        }
        self.listing.as_mut().ok_or_else(|| ReplicaError::Bug {
            replica: self.settings.name.clone(),
            msg: "no listing after listing the replica".into(),
        })
    }

    fn set_shipped(&mut self, txid: u64) -> Result<(), ReplicaError> {
        self.shared.shipped.store(txid, Ordering::SeqCst);
        self.shared.shipped_news.notify_one();
        self.position.save(&Persisted { shipped: txid }).map_err(|source| ReplicaError::Local {
            replica: self.settings.name.clone(),
            what: "cannot record the replica's position".into(),
            source,
        })
    }

    /// Whether the storage quota has room for compacting `inputs` (if
    /// not, the level waits: compaction only saves restores time).
    async fn compaction_fits(&mut self, inputs: &Listing) -> Result<bool, ReplicaError> {
        let Some(limit) = self.store.sandbox().storage_quota_bytes else { return Ok(true) };
        let fits = quota::compaction_fits(self.listing().await?, inputs, limit);
        if !fits {
            tracing::debug!(replica = %self.settings.name, "compaction waits: the storage quota has no room for it");
        }
        Ok(fits)
    }

    /// Compact levels whose interval has passed; request a snapshot when
    /// the newest is older than the snapshot interval; apply retention.
    pub async fn maintain(&mut self, scratch: &std::path::Path) -> Result<(), ReplicaError> {
        for level in 0..self.settings.compaction.level_intervals.len() {
            let interval = self.settings.compaction.level_intervals[level];
            if interval.is_zero() || self.last_compaction[level].elapsed() < interval {
                continue;
            }
            self.last_compaction[level] = Instant::now();
            let inputs = compact::plan(self.listing().await?, level as u32);
            if inputs.len() < 2 || !self.compaction_fits(&inputs).await? {
                continue;
            }
            self.may_write()?;
            let (name, remote) =
                compact::compact(&self.store, &inputs, level as u32, scratch, &self.meta.spool(), &self.recent).await?;
            if level == 0 {
                self.recent.forget(name.max_txid, &[]);
            }
            tracing::debug!(replica = %self.settings.name, "compacted {} segments into {name}", inputs.len());
            self.listing().await?.insert(name, remote);
        }
        let (shipped, every) = (self.shared.shipped.load(Ordering::SeqCst), self.settings.snapshot_interval);
        if snapshot_due_at(self.listing().await?, shipped, every).is_some_and(|at| now_ms() >= at) {
            self.shared.want_snapshot();
        }
        let (cfg, levels) = (self.settings.retention.clone(), self.settings.compaction.clone());
        let doomed = retention::deletable(self.listing().await?, now_ms(), &cfg, &levels);
        if !doomed.is_empty() {
            self.may_write()?;
            let keys = client::keys_of(&doomed, self.listing().await?);
            client::delete(&self.store, &keys).await?;
            let listing = self.listing().await?;
            for n in &doomed {
                listing.remove(n);
            }
            self.recent.forget(0, &doomed);
            tracing::debug!(replica = %self.settings.name, "retention removed {} segments", doomed.len());
        }
        Ok(())
    }

    /// Run until `stop` flips, waking on new TXIDs. Once `hurry` flips
    /// (the process is shutting down), failures are retried without the
    /// long backoff so the final sync gets out. The lease is kept beside
    /// it, and released at the end, after the final shipping, so the next
    /// process need not wait for it to expire.
    pub async fn run(
        mut self,
        txids: watch::Receiver<Durable>,
        hurry: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) {
        let (release, released) = watch::channel(false);
        let keeper = self.keeper.take().map(|k| tokio::spawn(k.run(released)));
        // The first pass waits for the lease's first answer, so that one
        // waiting for another process is `ready` at once, as `start_db`
        // needs, rather than after a TTL.
        let mut lease = self.lease.clone();
        tokio::select! {
            _ = lease.wait_for(|s| s.decided) => {}
            _ = stop.changed() => {}
        }
        self.serve(txids, hurry, stop).await;
        let _ = release.send(true);
        if let Some(k) = keeper {
            let _ = k.await;
        }
    }

    async fn serve(
        &mut self,
        mut txids: watch::Receiver<Durable>,
        mut hurry: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut lease = self.lease.clone();
        let scratch = self.meta.path().join(format!("scratch-{}", sanitize(&self.settings.name)));
        let mut failing: Option<Spell> = None;
        // When something last went up: new TXIDs ship at once unless that
        // was less than a sync interval ago.
        let mut last_upload = tokio::time::Instant::now() - self.settings.sync_interval;
        loop {
            let before = self.shared.shipped.load(Ordering::SeqCst);
            // Nothing is listed, let alone written, without the lease.
            let held = self.lease.borrow().holds(boottime());
            let result = self.pass(&txids, &hurry, &scratch).await;
            let progressed = self.shared.shipped.load(Ordering::SeqCst) > before;
            if progressed {
                last_upload = tokio::time::Instant::now();
            }
            let mut waking = false;
            let wait = match result {
                Ok(Passed::Done) => {
                    self.recovered(failing.take());
                    self.idle_wait(&txids.borrow())
                }
                // Until the renewal lands (`lease_flipped`), or a sync
                // interval, after which a lease still unconfirmed is a
                // failure like any other.
                Ok(Passed::Waking) => {
                    waking = true;
                    self.settings.sync_interval
                }
                Err(e) => self.failed(&e, failing.get_or_insert_with(Spell::new), progressed, *hurry.borrow()),
            };
            if *stop.borrow() {
                return;
            }
            self.store.expire_warm();
            let deadline = tokio::time::Instant::now() + wait;
            let mut woke_by_txid = false;
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                r = txids.changed() => { if r.is_err() { return; } woke_by_txid = true; }
                _ = hurry.changed() => {}
                _ = stop.changed() => {}
                _ = lease_flipped(&mut lease, failing.is_some() || waking, held) => {}
            }
            if woke_by_txid && failing.is_some() && !*hurry.borrow() {
                // Keep backing off while failing, even if writes keep coming.
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = hurry.changed() => {}
                    _ = stop.changed() => {}
                    _ = lease_flipped(&mut lease, true, held) => {}
                }
            } else if woke_by_txid {
                // Ship at once, but at most once per sync interval: what
                // arrives meanwhile goes up together.
                tokio::time::sleep_until(last_upload + self.settings.sync_interval).await;
            }
        }
    }
}

impl ReplicaTask {
    /// One pass: list the replica (with the lease), ship, and unless
    /// shutting down, maintain it.
    async fn pass(
        &mut self,
        txids: &watch::Receiver<Durable>,
        hurry: &watch::Receiver<bool>,
        scratch: &std::path::Path,
    ) -> Result<Passed, ReplicaError> {
        let durable = txids.borrow().clone();
        let due = self.writes_due(durable.txid);
        if due {
            self.demand.now();
        }
        // A rest just ended (the demand above): the renewal is on its way,
        // and waiting for it is no failure.
        let standing = self.lease.borrow().clone();
        let now = boottime();
        if !standing.holds(now) && standing.waking_until.is_some_and(|w| now < w) {
            return Ok(Passed::Waking);
        }
        let listed = match self.may_write() {
            Ok(()) => self.listing().await.map(|_| ()),
            Err(e) => Err(e),
        };
        self.shared.ready.store(true, Ordering::SeqCst);
        let shutting_down = *hurry.borrow();
        listed?;
        let shipped = self.ship(&durable).await;
        // At shutdown only shipping counts: a compaction, retention or a
        // snapshot falling due then (under faults, minutes of work) made
        // the final wait run out before the last TXID was up. The next run
        // does them. A replica at its storage quota still applies
        // retention, which may make the room.
        let quota = match shipped {
            Err(e @ ReplicaError::Quota { .. }) => Some(e),
            other => {
                other?;
                None
            }
        };
        if !shutting_down {
            self.maintain(scratch).await?;
        }
        quota.map_or(Ok(Passed::Done), Err)
    }

    /// Whether this pass would write to the store (`due::writes_due`).
    /// Compaction levels whose interval passed with nothing to compact
    /// start their next interval, as `maintain` would have.
    fn writes_due(&mut self, durable: u64) -> bool {
        let elapsed: Vec<bool> = self
            .settings
            .compaction
            .level_intervals
            .iter()
            .zip(&self.last_compaction)
            .map(|(every, last)| !every.is_zero() && last.elapsed() >= *every)
            .collect();
        let due = writes_due(&Position {
            listing: self.listing.as_ref(),
            wants_snapshot: self.shared.wants_snapshot.load(Ordering::SeqCst),
            shipped: self.shared.shipped.load(Ordering::SeqCst),
            durable,
            compaction_due: &elapsed,
            snapshot_interval: self.settings.snapshot_interval,
            retention: &self.settings.retention,
            compaction: &self.settings.compaction,
            now_ms: now_ms(),
        });
        if !due {
            for (last, elapsed) in self.last_compaction.iter_mut().zip(elapsed) {
                if elapsed {
                    *last = Instant::now();
                }
            }
        }
        due
    }

    /// A good pass, ending `spell` if one was on.
    fn recovered(&self, spell: Option<Spell>) {
        if let Some(spell) = spell {
            tracing::info!(replica = %self.settings.name, database = %self.store.labels().database, "replica recovered after {:.0?} of failures", spell.since.elapsed());
        }
        self.shared.record_success();
    }

    /// A failed pass: record and report it, forget what may be stale, and
    /// say how long to back off.
    fn failed(&mut self, e: &ReplicaError, spell: &mut Spell, progressed: bool, hurry: bool) -> Duration {
        self.shared.record_failure(e);
        // Listing may be stale after errors: refetch next time.
        self.listing = None;
        self.recent.clear();
        spell.report(e, &self.settings.name, &self.store.labels().database);
        spell.next_wait(e.class(), progressed, hurry)
    }

    /// How long to sleep after a good pass when no new TXID comes: a sync
    /// interval while anything is left to ship, else until the next
    /// compaction, snapshot or the warm session's expiry is due, at most
    /// `MAX_IDLE_WAIT`. New TXIDs wake the loop anyway; an idle process
    /// pays for every wake-up from sleep, and one per sync interval found
    /// nothing to do.
    fn idle_wait(&self, durable: &Durable) -> Duration {
        let interval = self.settings.sync_interval;
        if self.shared.wants_snapshot.load(Ordering::SeqCst)
            || self.shared.shipped.load(Ordering::SeqCst) < durable.txid
        {
            return interval;
        }
        // A level with fewer than two segments to merge stays so until a
        // new TXID (which wakes the loop) or a compaction below it (whose
        // own wake-up comes first).
        let has_input =
            |level: usize| self.listing.as_ref().is_none_or(|listing| compact::plan(listing, level as u32).len() >= 2);
        let compaction = self
            .settings
            .compaction
            .level_intervals
            .iter()
            .zip(&self.last_compaction)
            .enumerate()
            .filter(|&(level, (every, _))| !every.is_zero() && has_input(level))
            .map(|(_, (every, last))| every.saturating_sub(last.elapsed()))
            .min();
        let now = now_ms();
        let shipped = self.shared.shipped.load(Ordering::SeqCst);
        let snapshot = self
            .listing
            .as_ref()
            .and_then(|listing| snapshot_due_at(listing, shipped, self.settings.snapshot_interval))
            .map(|at| Duration::from_millis((at - now).max(0) as u64));
        // The warm session is freed on the first wake after its expiry.
        let warm = self.store.warm_expires_in().map(|d| d + Duration::from_millis(1));
        let retention = self.listing.as_ref().and_then(|listing| {
            let at = retention::next_change_ms(listing, now, &self.settings.retention, &self.settings.compaction)?;
            Some(Duration::from_millis((at - now).max(0) as u64))
        });
        let most = if self.listing.is_some() { MAX_IDLE_PASS } else { MAX_IDLE_WAIT };
        [compaction, snapshot, warm, retention].into_iter().flatten().fold(most, Duration::min).max(interval)
    }
}

fn state_name(replica: &str) -> String {
    format!("replica-{}", sanitize(replica))
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}
