//! Level-0 segments this replica uploaded from memory, kept until the
//! level-0 compaction that consumes them: it then reads them here instead
//! of fetching each back through the plugin (a call, a copy into the
//! sandbox and one out, per input: the larger part of compacting a busy
//! half-minute's thirty small segments, after the zstd work).

use crate::segment::SegmentName;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most bytes one replica keeps: a level-0 run larger than this is
/// compacted through scratch files anyway (`compact::IN_MEMORY_BYTES`),
/// and a full cache only means fetching.
const REPLICA_BYTES: u64 = 4 << 20;
/// Most bytes all replicas of the process keep together, so a host with
/// many tenants' databases holds at most this much for the shortcut.
const PROCESS_BYTES: u64 = 64 << 20;

/// Bytes held by every `Recent` of the process.
static HELD: AtomicU64 = AtomicU64::new(0);

/// One replica's recently uploaded level-0 segments (plaintext, as
/// uploaded before any encryption), each with the size the store holds.
#[derive(Default)]
pub struct Recent {
    segments: BTreeMap<SegmentName, (Arc<[u8]>, u64)>,
    bytes: u64,
}

impl Recent {
    /// Keep `bytes`, just uploaded as `name` (`stored` bytes in the store:
    /// more when encrypted), if both budgets allow.
    pub fn insert(&mut self, name: SegmentName, bytes: Arc<[u8]>, stored: u64) {
        let len = bytes.len() as u64;
        if name.level != 0 || self.bytes + len > REPLICA_BYTES || self.segments.contains_key(&name) {
            return;
        }
        if HELD.fetch_add(len, Ordering::Relaxed) + len > PROCESS_BYTES {
            HELD.fetch_sub(len, Ordering::Relaxed);
            return;
        }
        self.bytes += len;
        self.segments.insert(name, (bytes, stored));
    }

    /// The bytes uploaded as `name`, if kept and `size` long (what the
    /// listing says the store holds).
    pub fn get(&self, name: &SegmentName, size: u64) -> Option<Arc<[u8]>> {
        self.segments.get(name).filter(|(_, stored)| *stored == size).map(|(b, _)| b.clone())
    }

    /// Drop what no later level-0 compaction reads: segments up to
    /// `txid`, and any named in `gone`.
    pub fn forget(&mut self, txid: u64, gone: &[SegmentName]) {
        let doomed: Vec<SegmentName> =
            self.segments.keys().filter(|n| n.max_txid <= txid || gone.contains(n)).copied().collect();
        for name in doomed {
            self.remove(&name);
        }
    }

    pub fn clear(&mut self) {
        self.forget(u64::MAX, &[]);
    }

    fn remove(&mut self, name: &SegmentName) {
        if let Some((b, _)) = self.segments.remove(name) {
            self.bytes -= b.len() as u64;
            HELD.fetch_sub(b.len() as u64, Ordering::Relaxed);
        }
    }
}

impl Drop for Recent {
    fn drop(&mut self) {
        HELD.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l0(txid: u64) -> SegmentName {
        SegmentName { level: 0, min_txid: txid, max_txid: txid }
    }

    /// Kept within the replica's budget, found only at the listed size,
    /// forgotten once compacted or deleted; the process-wide count
    /// follows (other tests' caches may hold bytes too, so only this
    /// cache's share is compared).
    #[test]
    fn kept_within_budget_and_forgotten_when_consumed() {
        let mut recent = Recent::default();
        recent.insert(l0(1), Arc::from(vec![1u8; 100]), 100);
        recent.insert(l0(2), Arc::from(vec![2u8; 100]), 100);
        recent.insert(SegmentName { level: 1, min_txid: 1, max_txid: 2 }, Arc::from(vec![3u8; 100]), 100);
        recent.insert(l0(3), Arc::from(vec![0u8; REPLICA_BYTES as usize]), REPLICA_BYTES);
        assert_eq!(recent.bytes, 200, "only level 0, only within the budget");
        assert_eq!(recent.get(&l0(1), 100).as_deref(), Some(&[1u8; 100][..]));
        assert!(recent.get(&l0(1), 99).is_none(), "a size the listing disagrees with is not trusted");
        assert!(recent.get(&l0(3), REPLICA_BYTES).is_none());
        recent.insert(l0(4), Arc::from(vec![4u8; 100]), 100);
        recent.forget(1, &[l0(4)]);
        assert!(recent.get(&l0(1), 100).is_none() && recent.get(&l0(4), 100).is_none());
        assert!(recent.get(&l0(2), 100).is_some());
        assert!(HELD.load(Ordering::Relaxed) >= 100);
        recent.clear();
        assert_eq!(recent.bytes, 0);
    }
}
