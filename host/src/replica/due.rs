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
    let newest = listing.iter().filter(|(n, _)| n.is_snapshot()).map(|(_, s)| s.timestamp_ms).max();
    let snapshot = newest
        .is_some_and(|ts| !p.snapshot_interval.is_zero() && p.now_ms - ts >= p.snapshot_interval.as_millis() as i64);
    compacts || snapshot || !retention::deletable(listing, p.now_ms, p.retention, p.compaction).is_empty()
}
