//! One replica's life: ship spooled segments in TXID order, compact levels
//! on their intervals, ask for snapshots, apply retention. Each replica
//! runs on its own, so a slow or failing one delays no other and never the
//! database: capture only ever writes to the local spool.

use super::catch_up;
use super::client::{self, Listing};
use super::compact;
use super::error::{ReplicaError, class_of_chain};
use super::keeper::{Keeper, lease_flipped, refusal};
use super::lease::Standing;
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

/// The longest an idle replica sleeps between passes: retention is
/// checked on these passes and need not be timelier than this (Litestream
/// checks it hourly).
const MAX_IDLE_WAIT: Duration = Duration::from_secs(10);

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
    /// The lease tenure our listing belongs to.
    lease_generation: u64,
}

impl ReplicaTask {
    pub fn new(store: PluginStore, settings: ReplicaSettings, meta: MetaDir) -> Self {
        let shared = Arc::new(ReplicaShared::default());
        let position = meta.record(&state_name(&settings.name));
        let persisted: Persisted = position.load().unwrap_or_default();
        shared.shipped.store(persisted.shipped, Ordering::SeqCst);
        let levels = settings.compaction.level_intervals.len();
        let store = Arc::new(store);
        let (keeper, lease) = Keeper::new(store.clone(), settings.lease_timeout, settings.once);
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
            keeper: Some(keeper),
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
                self.set_shipped(0)?;
                self.shared.wants_snapshot.store(true, Ordering::SeqCst);
            } else if let Some(reached) = super::plan::chain_broken(&listing, held) {
                tracing::warn!(
                    database = %self.store.labels().database,
                    "replica {}: segments after TXID {reached:016x} are missing (the store lost objects it had accepted, or someone deleted them); a snapshot restores the chain",
                    self.settings.name
                );
                self.shared.wants_snapshot.store(true, Ordering::SeqCst);
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
        self.position.save(&Persisted { shipped: txid }).map_err(|source| ReplicaError::Local {
            replica: self.settings.name.clone(),
            what: "cannot record the replica's position".into(),
            source,
        })
    }

    /// Upload what the spool holds beyond our position, in order.
    /// Only segments up to `durable.txid` (what the capture has recorded)
    /// ship: a segment in the spool past it may be a crash's leftover that
    /// the next run rebuilds differently.
    pub async fn ship(&mut self, durable: &Durable) -> Result<u64, ReplicaError> {
        self.listing().await?;
        let (fresh, durable) = (durable.fresh.as_ref(), durable.txid);
        if self.shared.held.load(Ordering::SeqCst) > durable {
            // The replica is ahead of the capture (taken over from another
            // process or host): anything we ship now would reuse its TXIDs.
            // The capture continues after it with a snapshot first
            // (`replicate::continue_after_replicas`).
            return Ok(0);
        }
        if !self.shared.wants_snapshot.load(Ordering::SeqCst)
            && let Some(uploaded) = self.ship_next(fresh, durable).await?
        {
            return Ok(uploaded);
        }
        let mut spool = list_spool(&self.meta.spool()).map_err(|source| ReplicaError::Local {
            replica: self.settings.name.clone(),
            what: format!("cannot read the spool {}", self.meta.spool().display()),
            source,
        })?;
        spool.retain(|e| e.name.max_txid <= durable);
        self.ship_spool(&spool).await
    }

    /// A sync usually adds one level-0 segment, often still in memory: try
    /// it before listing the spool. Once up, our position is `durable`; if
    /// it was damaged, a snapshot is wanted. Either way nothing else ships
    /// now. `None` if the spool must be listed.
    async fn ship_next(&mut self, fresh: Option<&Fresh>, durable: u64) -> Result<Option<u64>, ReplicaError> {
        let shipped = self.shared.shipped.load(Ordering::SeqCst);
        if shipped >= durable {
            return Ok(Some(0));
        }
        let name = SegmentName { level: 0, min_txid: shipped + 1, max_txid: durable };
        if shipped > 0 {
            if let Some(f) = fresh.filter(|f| f.entry.name == name) {
                return Ok(Some(u64::from(self.upload(&f.entry, Some(f.bytes.clone())).await?)));
            }
            let path = spool_path(&self.meta.spool(), &name);
            if let Ok(m) = std::fs::metadata(&path) {
                let entry = SpoolEntry { name, path, size: m.len(), timestamp_ms: 0 };
                return Ok(Some(u64::from(self.upload(&entry, None).await?)));
            }
        }
        Ok(None)
    }

    /// Upload from `spool` in order until the replica is at its end: a
    /// backlog merged into one segment (`catch_up`), else segment by
    /// segment. Returns how many uploads went up.
    async fn ship_spool(&mut self, spool: &[SpoolEntry]) -> Result<u64, ReplicaError> {
        let (mut uploaded, mut merging) = (0, true);
        loop {
            let shipped = self.shared.shipped.load(Ordering::SeqCst);
            let wants = self.shared.wants_snapshot.load(Ordering::SeqCst);
            let run = if merging && !wants { self.backlog(spool, shipped) } else { Vec::new() };
            if !run.is_empty() {
                match self.upload_run(&run).await {
                    Ok(true) => uploaded += 1,
                    Ok(false) => return Ok(uploaded),
                    // The segments still go up, one by one.
                    Err(e @ ReplicaError::Compaction { .. }) => {
                        tracing::warn!(database = %self.store.labels().database, "{e}; sending them one by one");
                        merging = false;
                    }
                    Err(e) => return Err(e),
                }
                continue;
            }
            let Some(next) = next_to_ship(spool, shipped, wants) else {
                if spool.iter().any(|e| e.name.max_txid > shipped) {
                    // The chain we need was dropped from the spool.
                    self.shared.wants_snapshot.store(true, Ordering::SeqCst);
                }
                return Ok(uploaded);
            };
            if next.name.is_snapshot() && self.listing.as_ref().is_some_and(|l| l.contains_key(&next.name)) {
                // The replica holds this very snapshot (one forced with
                // nothing new to capture): it is there, so it counts.
                self.shared.wants_snapshot.store(false, Ordering::SeqCst);
                self.set_shipped(next.name.max_txid.max(shipped))?;
                continue;
            }
            if !self.upload(next, None).await? {
                return Ok(uploaded);
            }
            uploaded += 1;
        }
    }

    /// The spooled segments after `shipped` to send merged, if a backlog
    /// built up (`catch_up::backlog`).
    fn backlog(&self, spool: &[SpoolEntry], shipped: u64) -> Vec<SpoolEntry> {
        let listed = self
            .listing
            .as_ref()
            .and_then(|l| l.keys().filter(|n| n.level == 0 && n.min_txid == shipped + 1).map(|n| n.max_txid).max());
        catch_up::backlog(spool, shipped, listed)
    }

    /// Send `run` (contiguous level-0 segments from the spool) merged into
    /// one level-0 segment over their TXIDs (`catch_up`).
    async fn upload_run(&mut self, run: &[SpoolEntry]) -> Result<bool, ReplicaError> {
        let (Some(first), Some(last)) = (run.first(), run.last()) else { return Ok(true) };
        let name = SegmentName { level: 0, min_txid: first.name.min_txid, max_txid: last.name.max_txid };
        let replica = self.settings.name.clone();
        let scratch = self.meta.path().join(format!("scratch-{}", sanitize(&replica)));
        std::fs::create_dir_all(&scratch).map_err(|source| ReplicaError::Local {
            replica: replica.clone(),
            what: format!("cannot create {}", scratch.display()),
            source,
        })?;
        let out = scratch.join(format!("run-{}", name.file_name()));
        let (entries, sparse, o) = (run.to_vec(), scratch.join("run.sparse"), out.clone());
        let merged = tokio::task::spawn_blocking(move || compact::merge_spooled(&entries, &sparse, &o))
            .await
            .map_err(|e| ReplicaError::Bug { replica: replica.clone(), msg: format!("the merge thread failed: {e}") })?
            .map_err(|e| ReplicaError::Compaction {
                replica,
                msg: format!("cannot merge the backlog {name}: {e:#}"),
                class: class_of_chain(&e),
            });
        let (header, bytes) = match merged {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_file(&out);
                return Err(e);
            }
        };
        let size = bytes.as_ref().map_or_else(|| std::fs::metadata(&out).map_or(0, |m| m.len()), |b| b.len() as u64);
        let entry = SpoolEntry { name, path: out.clone(), size, timestamp_ms: header.timestamp_ms };
        tracing::debug!(database = %self.store.labels().database, "catching up: {} segments as {name}", run.len());
        let result = self.upload(&entry, bytes.map(std::sync::Arc::from)).await;
        let _ = std::fs::remove_file(&out);
        result
    }

    /// Upload one spooled segment (from `bytes` if given, else from the
    /// spool) and move our position past it. `false` if the segment was
    /// damaged (a power failure before it reached the disk): it is dropped,
    /// and the replica asks for a snapshot.
    async fn upload(&mut self, entry: &SpoolEntry, bytes: Option<std::sync::Arc<[u8]>>) -> Result<bool, ReplicaError> {
        self.may_write()?;
        let shipped = self.shared.shipped.load(Ordering::SeqCst);
        let kept = bytes.clone();
        let remote = match client::upload(&self.store, entry, None, bytes).await {
            Ok(remote) => remote,
            Err(e @ ReplicaError::DamagedSpool { .. }) => {
                tracing::warn!(database = %self.store.labels().database, "{e}");
                if let Err(rm) = std::fs::remove_file(&entry.path) {
                    tracing::warn!("could not remove {}: {rm}", entry.path.display());
                }
                self.shared.wants_snapshot.store(true, Ordering::SeqCst);
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        if entry.name.is_snapshot() {
            self.shared.wants_snapshot.store(false, Ordering::SeqCst);
        }
        let stored = remote.size;
        if let Some(l) = self.listing.as_mut() {
            l.insert(entry.name, remote);
        }
        if let Some(b) = kept.filter(|_| self.settings.compaction.level_intervals.first().is_some_and(|i| !i.is_zero()))
        {
            self.recent.insert(entry.name, b, stored);
        }
        self.set_shipped(entry.name.max_txid.max(shipped))?;
        Ok(true)
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
            if inputs.len() < 2 {
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
        if let Some(ts) = newest_snapshot_ms(self.listing().await?)
            && !self.settings.snapshot_interval.is_zero()
            && now_ms() - ts >= self.settings.snapshot_interval.as_millis() as i64
        {
            self.shared.wants_snapshot.store(true, Ordering::SeqCst);
        }
        let (cfg, levels) = (self.settings.retention.clone(), self.settings.compaction.clone());
        let doomed = retention::deletable(self.listing().await?, now_ms(), &cfg, &levels);
        if !doomed.is_empty() {
            self.may_write()?;
            client::delete(&self.store, &doomed).await?;
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
            let wait = match result {
                Ok(()) => {
                    self.recovered(failing.take());
                    self.idle_wait(&txids.borrow())
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
                _ = lease_flipped(&mut lease, failing.is_some(), held) => {}
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
    ) -> Result<(), ReplicaError> {
        let listed = match self.may_write() {
            Ok(()) => self.listing().await.map(|_| ()),
            Err(e) => Err(e),
        };
        self.shared.ready.store(true, Ordering::SeqCst);
        let shutting_down = *hurry.borrow();
        listed?;
        let durable = txids.borrow().clone();
        self.ship(&durable).await?;
        // At shutdown only shipping counts: a compaction, retention or a
        // snapshot falling due then (under faults, minutes of work) made
        // the final wait run out before the last TXID was up. The next run
        // does them.
        if shutting_down { Ok(()) } else { self.maintain(scratch).await }
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
        let compaction = self
            .settings
            .compaction
            .level_intervals
            .iter()
            .zip(&self.last_compaction)
            .filter(|(every, _)| !every.is_zero())
            .map(|(every, last)| every.saturating_sub(last.elapsed()))
            .min();
        let every = self.settings.snapshot_interval;
        let snapshot = self
            .listing
            .as_ref()
            .and_then(newest_snapshot_ms)
            .filter(|_| !every.is_zero())
            .map(|ts| Duration::from_millis((ts + every.as_millis() as i64 - now_ms()).max(0) as u64));
        // The warm session is freed on the first wake after its expiry.
        let warm = self.store.warm_expires_in().map(|d| d + Duration::from_millis(1));
        [compaction, snapshot, warm].into_iter().flatten().fold(MAX_IDLE_WAIT, Duration::min).max(interval)
    }
}

/// The next spool entry that continues the replica from `shipped`: a
/// snapshot if one is wanted (at or past our position), else the next
/// level-0 segment, else a snapshot that gets further.
pub fn next_to_ship(spool: &[SpoolEntry], shipped: u64, wants_snapshot: bool) -> Option<&SpoolEntry> {
    let newest_snapshot = spool.iter().filter(|e| e.name.is_snapshot()).max_by_key(|e| e.name.max_txid);
    if wants_snapshot && let Some(s) = newest_snapshot.filter(|s| s.name.max_txid >= shipped) {
        return Some(s);
    }
    if shipped > 0
        && let Some(e) = spool.iter().find(|e| e.name.level == 0 && e.name.min_txid == shipped + 1)
    {
        return Some(e);
    }
    newest_snapshot.filter(|s| s.name.max_txid > shipped)
}

/// When the newest snapshot in `listing` was taken.
fn newest_snapshot_ms(listing: &Listing) -> Option<i64> {
    listing.iter().filter(|(n, _)| n.is_snapshot()).map(|(_, s)| s.timestamp_ms).max()
}

fn state_name(replica: &str) -> String {
    format!("replica-{}", sanitize(replica))
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn entry(level: u32, min: u64, max: u64) -> SpoolEntry {
        SpoolEntry {
            name: SegmentName { level, min_txid: min, max_txid: max },
            path: PathBuf::new(),
            size: 0,
            timestamp_ms: 0,
        }
    }

    #[test]
    fn the_next_segment_continues_the_replica_or_a_snapshot_gets_further() {
        let spool = [entry(9, 1, 3), entry(0, 4, 4), entry(0, 5, 5), entry(9, 1, 5)];
        let next = |shipped, wants| next_to_ship(&spool, shipped, wants).map(|e| e.name);
        assert_eq!(next(3, false), Some(entry(0, 4, 4).name), "the level-0 segment after our position");
        assert_eq!(next(0, false), Some(entry(9, 1, 5).name), "an empty replica starts from the newest snapshot");
        assert_eq!(next(3, true), Some(entry(9, 1, 5).name), "a wanted snapshot comes first");
        assert_eq!(next(6, false), None, "nothing continues past our position");
        assert_eq!(next(6, true), None, "a snapshot behind our position is not wanted");
        let gap = [entry(9, 1, 3), entry(0, 6, 6)];
        assert_eq!(next_to_ship(&gap, 4, false), None, "a missing level-0 segment is not skipped");
    }
}
