//! Choosing segments: which ones restore a TXID (the newest snapshot at or
//! before it plus the fewest segments after), and which ones retention
//! may delete because no allowed restore point needs them.

use super::client::Listing;
use crate::segment::SegmentName;
use std::collections::{BTreeMap, VecDeque, btree_map::Entry};

/// What to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Latest,
    Txid(u64),
    /// Milliseconds since the epoch: the newest restore point at or before.
    Timestamp(i64),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("the replica holds no snapshot{0}")]
    NoSnapshot(String),
    #[error(
        "TXID {target:016x} cannot be restored: the segments after TXID {reached:016x} are missing (restore points available: {available})"
    )]
    Unreachable { target: u64, reached: u64, available: String },
    #[error("no restore point at or before {0}")]
    TooEarly(String),
}

/// Segments, in order, that rebuild the database at `target`.
pub fn restore_plan(listing: &Listing, target: Target) -> Result<Vec<SegmentName>, PlanError> {
    let target = match target {
        Target::Timestamp(ms) => {
            let t = listing
                .iter()
                .filter(|(_, s)| s.timestamp_ms <= ms)
                .map(|(n, _)| n.max_txid)
                .max()
                .ok_or_else(|| PlanError::TooEarly(crate::clock::rfc3339(ms)))?;
            Target::Txid(t)
        }
        t => t,
    };
    let limit = match target {
        Target::Txid(t) => t,
        _ => u64::MAX,
    };
    let snapshots: Vec<&SegmentName> = listing.keys().filter(|n| n.is_snapshot() && n.max_txid <= limit).collect();
    let Some(start) = snapshots.iter().max_by_key(|n| n.max_txid) else {
        let why = if listing.is_empty() { String::new() } else { format!(" at or before TXID {limit:016x}") };
        return Err(PlanError::NoSnapshot(why));
    };
    let came_from = chains(listing, start.max_txid, limit);
    let reached_max = *came_from.keys().next_back().unwrap_or(&start.max_txid);
    // Latest means the newest TXID the replica holds at all: stopping
    // short of it because a segment is missing would be a silent loss.
    let goal = match target {
        Target::Txid(t) => t,
        _ => listing.keys().map(|n| n.max_txid).max().unwrap_or(reached_max),
    };
    if !came_from.contains_key(&goal) {
        let below: Vec<u64> = came_from.keys().copied().filter(|&e| e <= goal).collect();
        let available = match (below.first(), below.last()) {
            (Some(a), Some(b)) if a != b => format!("{a:016x}..{b:016x} at segment ends"),
            (Some(a), _) => format!("{a:016x}"),
            _ => "none".into(),
        };
        return Err(PlanError::Unreachable { target: goal, reached: reached_max.min(goal), available });
    }
    let mut plan = path_to(&came_from, goal);
    plan.insert(0, **start);
    Ok(plan)
}

/// Breadth-first over TXID ends reachable from `from` through non-snapshot
/// segments ending at or before `limit`: for each end, the segment that
/// first reached it (the first time is with the fewest segments).
fn chains(listing: &Listing, from: u64, limit: u64) -> BTreeMap<u64, Option<&SegmentName>> {
    let mut by_start: BTreeMap<u64, Vec<&SegmentName>> = BTreeMap::new();
    for n in listing.keys().filter(|n| !n.is_snapshot() && n.max_txid <= limit && n.min_txid > from) {
        by_start.entry(n.min_txid).or_default().push(n);
    }
    let mut came_from: BTreeMap<u64, Option<&SegmentName>> = BTreeMap::from([(from, None)]);
    let mut queue = VecDeque::from([from]);
    while let Some(end) = queue.pop_front() {
        for n in by_start.get(&(end + 1)).into_iter().flatten() {
            if let Entry::Vacant(slot) = came_from.entry(n.max_txid) {
                slot.insert(Some(n));
                queue.push_back(n.max_txid);
            }
        }
    }
    came_from
}

/// The segments, in order, that lead to `goal` in a `chains` result.
fn path_to(came_from: &BTreeMap<u64, Option<&SegmentName>>, goal: u64) -> Vec<SegmentName> {
    let mut plan = Vec::new();
    let mut end = goal;
    while let Some(Some(n)) = came_from.get(&end) {
        plan.push(**n);
        end = n.min_txid - 1;
    }
    plan.reverse();
    plan
}

/// Where the chain to the replica's newest TXID `held` breaks, if it does:
/// the TXID a restore reaches. Retention and compaction always keep the
/// newest TXID restorable, so a break means objects vanished.
pub fn chain_broken(listing: &Listing, held: u64) -> Option<u64> {
    match restore_plan(listing, Target::Txid(held)) {
        Err(PlanError::Unreachable { reached, .. }) => Some(reached),
        _ => None,
    }
}

/// For `restore -f`: the segments that carry a database at `txid` to the
/// newest TXID reachable from it (empty if nothing new).
pub fn follow_plan(listing: &Listing, txid: u64) -> Vec<SegmentName> {
    let came_from = chains(listing, txid, u64::MAX);
    let newest = came_from.keys().next_back().copied().unwrap_or(txid);
    path_to(&came_from, newest)
}

#[cfg(test)]
mod tests {
    use super::super::client::RemoteSegment;
    use super::*;

    #[test]
    fn a_hole_before_the_newest_txid_is_found_an_intact_chain_is_not() {
        let seg = |level, min, max| {
            (
                SegmentName { level, min_txid: min, max_txid: max },
                crate::replica::RemoteSegment { size: 1, timestamp_ms: 0, modified_ms: None, parts: 0 },
            )
        };
        let mut listing: Listing = [seg(9, 1, 5), seg(0, 6, 6), seg(0, 7, 7), seg(1, 6, 7)].into_iter().collect();
        assert_eq!(chain_broken(&listing, 7), None);
        listing.insert(seg(0, 9, 9).0, seg(0, 9, 9).1);
        assert_eq!(chain_broken(&listing, 9), Some(7), "TXID 8 was lost");
    }

    fn listing(names: &[(u32, u64, u64, i64)]) -> Listing {
        names
            .iter()
            .map(|&(level, min, max, ts)| {
                (
                    SegmentName { level, min_txid: min, max_txid: max },
                    RemoteSegment { size: 1, timestamp_ms: ts, modified_ms: None, parts: 0 },
                )
            })
            .collect()
    }

    fn seg(level: u32, min: u64, max: u64) -> SegmentName {
        SegmentName { level, min_txid: min, max_txid: max }
    }

    #[test]
    fn fewest_segments_from_newest_snapshot() {
        let l = listing(&[
            (9, 1, 3, 3),
            (0, 4, 4, 4),
            (0, 5, 5, 5),
            (0, 6, 6, 6),
            (1, 4, 6, 6),
            (0, 7, 7, 7),
            (9, 1, 5, 5),
        ]);
        assert_eq!(restore_plan(&l, Target::Latest).unwrap(), vec![seg(9, 1, 5), seg(0, 6, 6), seg(0, 7, 7)]);
        assert_eq!(restore_plan(&l, Target::Txid(4)).unwrap(), vec![seg(9, 1, 3), seg(0, 4, 4)]);
        assert_eq!(restore_plan(&l, Target::Txid(5)).unwrap(), vec![seg(9, 1, 5)]);
        assert_eq!(restore_plan(&l, Target::Timestamp(6)).unwrap(), vec![seg(9, 1, 5), seg(0, 6, 6)]);
    }

    #[test]
    fn follow_continues_from_a_txid() {
        let l = listing(&[(9, 1, 3, 3), (0, 4, 4, 4), (0, 5, 5, 5), (1, 4, 5, 5), (0, 6, 6, 6)]);
        assert_eq!(follow_plan(&l, 3), vec![seg(1, 4, 5), seg(0, 6, 6)]);
        assert_eq!(follow_plan(&l, 5), vec![seg(0, 6, 6)]);
        assert!(follow_plan(&l, 6).is_empty());
    }

    #[test]
    fn gaps_and_missing_snapshots_are_errors() {
        let l = listing(&[(9, 1, 3, 3), (0, 4, 4, 4), (0, 6, 6, 6)]);
        assert!(matches!(restore_plan(&l, Target::Txid(6)), Err(PlanError::Unreachable { .. })));
        assert!(matches!(restore_plan(&l, Target::Latest), Err(PlanError::Unreachable { target: 6, reached: 4, .. })));
        assert_eq!(restore_plan(&l, Target::Txid(4)).unwrap(), vec![seg(9, 1, 3), seg(0, 4, 4)]);
        assert!(matches!(restore_plan(&listing(&[(0, 4, 4, 4)]), Target::Latest), Err(PlanError::NoSnapshot(_))));
        assert!(matches!(restore_plan(&l, Target::Timestamp(1)), Err(PlanError::TooEarly(_))));
    }
}
