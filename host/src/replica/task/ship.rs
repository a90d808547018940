//! Shipping: what the spool holds beyond the replica's position goes
//! up in TXID order, merged when a backlog built up (`catch_up`), a
//! snapshot first when one is wanted.

use super::*;

impl ReplicaTask {
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
                    self.shared.want_snapshot();
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
        self.within_quota(entry).await?;
        let shipped = self.shared.shipped.load(Ordering::SeqCst);
        let kept = bytes.clone();
        let remote = match client::upload(&self.store, entry, None, bytes).await {
            Ok(remote) => remote,
            Err(e @ ReplicaError::DamagedSpool { .. }) => {
                tracing::warn!(database = %self.store.labels().database, "{e}");
                if let Err(rm) = std::fs::remove_file(&entry.path) {
                    tracing::warn!("could not remove {}: {rm}", entry.path.display());
                }
                self.shared.want_snapshot();
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

    /// Refuse an upload the replica's storage quota has no room for.
    async fn within_quota(&mut self, entry: &SpoolEntry) -> Result<(), ReplicaError> {
        let Some(limit) = self.store.sandbox().storage_quota_bytes else { return Ok(()) };
        let listing = self.listing().await?;
        quota::check(listing, &entry.name, entry.size, limit).map_err(|e| ReplicaError::Quota {
            labels: self.store.labels().to_string(),
            key: entry.name.key(),
            held: e.held,
            quota: e.quota,
            size: e.size,
        })
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
