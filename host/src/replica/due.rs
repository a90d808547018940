//! Whether a replica has anything to write, decided from what it knows
//! locally (the listing it keeps current, its position, the capture's
//! TXID) without asking the store: an idle replica's lease rests
//! (`lease::IDLE_LAPSE_TTLS`), and a pass that would write nothing must
//! not wake it.

use super::client::Listing;
use super::compact::{self, CompactionConfig};
use super::retention::{self, RetentionConfig};
use std::time::Duration;

/// What the decision reads.
pub struct Position<'a> {
    /// The replica's listing, if fetched (`None`: it must be listed,
    /// which needs the lease).
    pub listing: Option<&'a Listing>,
    pub wants_snapshot: bool,
    pub shipped: u64,
    /// What the capture has made durable.
    pub durable: u64,
    /// Per compaction level: whether its interval has passed.
    pub compaction_due: &'a [bool],
    pub snapshot_interval: Duration,
    pub retention: &'a RetentionConfig,
    pub compaction: &'a CompactionConfig,
    pub now_ms: i64,
}

/// When the next snapshot falls due (milliseconds since the epoch): the
/// newest one's time plus `interval`. `None` with no interval, with no
/// snapshot yet (the capture's first sync takes one), or when the newest
/// covers everything shipped: an idle database's new snapshot would be
/// that very one, and asking for it again woke the database and its
/// replica in a loop.
pub fn snapshot_due_at(listing: &Listing, shipped: u64, interval: Duration) -> Option<i64> {
    let (newest, taken) = listing.iter().filter(|(n, _)| n.is_snapshot()).max_by_key(|(n, _)| n.max_txid)?;
    (!interval.is_zero() && newest.max_txid < shipped).then(|| taken.timestamp_ms + interval.as_millis() as i64)
}

/// Whether the next pass would write to the store: something to ship, a
/// compaction with two inputs or more, a snapshot due, or a segment out
/// of retention.
pub fn writes_due(p: &Position<'_>) -> bool {
    let Some(listing) = p.listing else { return true };
    if p.wants_snapshot || p.shipped < p.durable {
        return true;
    }
    let compacts =
        p.compaction_due.iter().enumerate().any(|(level, due)| *due && compact::plan(listing, level as u32).len() >= 2);
    let snapshot = snapshot_due_at(listing, p.shipped, p.snapshot_interval).is_some_and(|at| p.now_ms >= at);
    compacts || snapshot || !retention::deletable(listing, p.now_ms, p.retention, p.compaction).is_empty()
}

#[cfg(test)]
mod tests {
    use super::super::client::RemoteSegment;
    use super::*;
    use crate::segment::SegmentName;

    fn listing(items: &[(u32, u64, u64, i64)]) -> Listing {
        let seg = |ts| RemoteSegment { size: 1, timestamp_ms: ts, modified_ms: None, parts: 0 };
        items.iter().map(|&(level, a, b, ts)| (SegmentName { level, min_txid: a, max_txid: b }, seg(ts))).collect()
    }

    #[test]
    fn a_snapshot_falls_due_only_when_it_would_hold_something_new() {
        let hour = Duration::from_secs(3600);
        let l = listing(&[(9, 1, 5, 1_000), (0, 6, 6, 2_000), (0, 7, 7, 3_000)]);
        assert_eq!(snapshot_due_at(&l, 7, hour), Some(1_000 + 3_600_000), "TXIDs 6-7 came after it");
        assert_eq!(snapshot_due_at(&l, 5, hour), None, "the newest covers all shipped: it would be the same");
        assert_eq!(snapshot_due_at(&l, 7, Duration::ZERO), None, "no interval");
        assert_eq!(snapshot_due_at(&listing(&[(0, 1, 1, 5)]), 1, hour), None, "no snapshot yet");
        let two = listing(&[(9, 1, 5, 1_000), (9, 1, 7, 4_000), (0, 8, 8, 5_000)]);
        assert_eq!(snapshot_due_at(&two, 8, hour), Some(4_000 + 3_600_000), "from the newest snapshot");
        assert_eq!(snapshot_due_at(&two, 7, hour), None);
    }
}
