//! Which segments no allowed restore point needs any more.
//!
//! Allowed restore points are every segment end newer than
//! `now - snapshot retention`. The oldest of them needs the newest snapshot
//! at or before it; everything ending at or before that snapshot goes
//! (older snapshots too). Lower levels also go once a higher level covers
//! them and they are older than their level's window (`l0-retention` for
//! level 0, the next level's interval above), which is Litestream 0.5's
//! trade between restore granularity and object count; except those on
//! the newest TXID's restore path (a compaction that straddles the newest
//! snapshot, `keep_newest_restorable`).

use super::client::Listing;
use super::compact::CompactionConfig;
use crate::segment::SegmentName;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct RetentionConfig {
    pub snapshot_retention: Duration,
    pub l0_retention: Duration,
}

/// The segments to delete now. A level's window above level 0 is the
/// next level's compaction interval (`compaction`).
pub fn deletable(
    listing: &Listing,
    now_ms: i64,
    cfg: &RetentionConfig,
    compaction: &CompactionConfig,
) -> Vec<SegmentName> {
    let cutoff = now_ms - cfg.snapshot_retention.as_millis() as i64;
    let mut out = Vec::new();
    let mut covered_ones = Vec::new();
    // The oldest restore point inside the window.
    let oldest_needed = listing.iter().filter(|(_, s)| s.timestamp_ms >= cutoff).map(|(n, _)| n.max_txid).min();
    let keep_snapshot = listing
        .keys()
        .filter(|n| n.is_snapshot() && oldest_needed.is_none_or(|t| n.max_txid <= t))
        .max_by_key(|n| n.max_txid)
        .copied();
    if let Some(keep) = keep_snapshot {
        out.extend(listing.keys().filter(|n| **n != keep && n.max_txid <= keep.max_txid).copied());
    }
    for (name, seg) in listing {
        if name.is_snapshot() || out.contains(name) {
            continue;
        }
        let old = created_ms(seg) < now_ms - window(name, cfg, compaction).as_millis() as i64;
        let covered = listing.keys().any(|c| {
            !c.is_snapshot() && c.level > name.level && c.min_txid <= name.min_txid && c.max_txid >= name.max_txid
        });
        if old && covered {
            covered_ones.push(*name);
        }
    }
    keep_newest_restorable(listing, out, covered_ones)
}

/// The deletions, less the covered segments on the newest TXID's restore
/// path. A compaction that began at or before the newest snapshot's TXID
/// (a level-1 [2,3] over a snapshot [1,2]: a restart's snapshot, or a
/// periodic one taken before level 1 caught up) covers level-0 segments
/// the chain from that snapshot still needs, since a chain cannot start
/// inside a compacted range. Only those stay, until a newer snapshot
/// supersedes them; everything else covered goes as before. Segments the
/// snapshot rule deletes end at or before the newest snapshot, which that
/// path starts from, so they never break it.
fn keep_newest_restorable(
    listing: &Listing,
    by_snapshot: Vec<SegmentName>,
    covered: Vec<SegmentName>,
) -> Vec<SegmentName> {
    use super::plan::{Target, restore_plan};
    use std::collections::BTreeSet;
    let all: BTreeSet<SegmentName> = by_snapshot.iter().chain(&covered).copied().collect();
    if covered.is_empty() {
        return all.into_iter().collect();
    }
    let left: Listing = listing.iter().filter(|(n, _)| !all.contains(n)).map(|(n, s)| (*n, s.clone())).collect();
    let whole = restore_plan(listing, Target::Latest);
    if restore_plan(&left, Target::Latest).is_ok() || whole.is_err() {
        return all.into_iter().collect();
    }
    let path: BTreeSet<SegmentName> = whole.unwrap_or_default().into_iter().collect();
    all.into_iter().filter(|n| !path.contains(n)).collect()
}

/// How long a lower-level segment stays once a higher level covers it.
fn window(name: &SegmentName, cfg: &RetentionConfig, compaction: &CompactionConfig) -> Duration {
    match name.level {
        0 => cfg.l0_retention,
        level => compaction.level_intervals.get(level as usize).copied().unwrap_or(cfg.snapshot_retention),
    }
}

/// When a segment reached the store. Age counts from then, not from its
/// newest transaction: a compaction of transactions shipped late (the
/// store was failing) looked old at once and went early.
fn created_ms(seg: &super::client::RemoteSegment) -> i64 {
    seg.modified_ms.map_or(seg.timestamp_ms, |m| m as i64)
}

/// The first instant after `now_ms` at which `deletable` may answer
/// otherwise for this listing, if any: it reads the clock only through
/// each segment's time against the snapshot retention and, below the
/// snapshots, against its level's window. An idle replica sleeps until
/// then instead of checking every few seconds (issue 17: 10,000 idle
/// replicas each waking every 10 s cost a few percent of a core).
pub fn next_change_ms(
    listing: &Listing,
    now_ms: i64,
    cfg: &RetentionConfig,
    compaction: &CompactionConfig,
) -> Option<i64> {
    let retention = cfg.snapshot_retention.as_millis() as i64;
    listing
        .iter()
        .flat_map(|(name, seg)| {
            // `timestamp >= now - retention` turns false, and
            // `created < now - window` true, one millisecond after each sum.
            let needed_until = seg.timestamp_ms + retention + 1;
            let old_from =
                (!name.is_snapshot()).then(|| created_ms(seg) + window(name, cfg, compaction).as_millis() as i64 + 1);
            [Some(needed_until), old_from]
        })
        .flatten()
        .filter(|&t| t > now_ms)
        .min()
}

#[cfg(test)]
mod tests {
    use super::super::client::RemoteSegment;
    use super::*;

    fn l(items: &[(u32, u64, u64, i64)]) -> Listing {
        items
            .iter()
            .map(|&(level, a, b, ts)| {
                (
                    SegmentName { level, min_txid: a, max_txid: b },
                    RemoteSegment { size: 1, timestamp_ms: ts, modified_ms: None, parts: 0 },
                )
            })
            .collect()
    }

    /// Retention of 100 ms, level 0 kept 10 ms, level 1 every 30 ms; two
    /// snapshots, level-0 segments and one level-1 compaction.
    fn two_snapshots() -> (RetentionConfig, CompactionConfig, Listing) {
        let cfg =
            RetentionConfig { snapshot_retention: Duration::from_millis(100), l0_retention: Duration::from_millis(10) };
        let levels = CompactionConfig { level_intervals: vec![Duration::ZERO, Duration::from_millis(30)] };
        let listing = l(&[
            (9, 1, 2, 0),
            (0, 3, 3, 50),
            (0, 4, 4, 120),
            (0, 5, 5, 150),
            (9, 1, 5, 150),
            (0, 6, 6, 195),
            (1, 3, 5, 150),
        ]);
        (cfg, levels, listing)
    }

    #[test]
    fn keeps_what_the_window_needs() {
        // Snapshots at t=0 (txid 2) and t=150 (txid 5); now = 200, window starts at 100.
        let (cfg, levels, listing) = two_snapshots();
        let del = deletable(&listing, 200, &cfg, &levels);
        // Oldest needed point is TXID 4 (t=120): needs snapshot 1-2 and segments after it.
        assert!(!del.contains(&SegmentName { level: 9, min_txid: 1, max_txid: 2 }));
        // L0 3..5 are covered by L1 3-5 and old enough.
        assert!(del.contains(&SegmentName { level: 0, min_txid: 3, max_txid: 3 }));
        assert!(!del.contains(&SegmentName { level: 0, min_txid: 6, max_txid: 6 }));
        // Now = 1000: only the newest snapshot and what follows remain.
        let del = deletable(&listing, 1000, &cfg, &levels);
        assert!(del.contains(&SegmentName { level: 9, min_txid: 1, max_txid: 2 }));
        assert!(del.contains(&SegmentName { level: 1, min_txid: 3, max_txid: 5 }));
        assert!(!del.contains(&SegmentName { level: 9, min_txid: 1, max_txid: 5 }));
        assert!(!del.contains(&SegmentName { level: 0, min_txid: 6, max_txid: 6 }));
    }

    /// A restart snapshotted at TXID 2 while level 0 already held [2,2];
    /// level 1 then compacted [2,2] and [3,3] into [2,3]. The chain from
    /// the snapshot cannot start inside [2,3], so level 0's [3,3] stays,
    /// and the newest TXID stays restorable.
    #[test]
    fn what_the_newest_txids_chain_needs_is_kept() {
        let cfg =
            RetentionConfig { snapshot_retention: Duration::from_secs(3600), l0_retention: Duration::from_millis(10) };
        let levels = CompactionConfig { level_intervals: vec![Duration::ZERO, Duration::from_millis(30)] };
        let listing = l(&[(9, 1, 2, 0), (0, 2, 2, 0), (0, 3, 3, 0), (0, 4, 4, 0), (1, 2, 3, 0)]);
        let del = deletable(&listing, 1000, &cfg, &levels);
        assert!(!del.contains(&SegmentName { level: 0, min_txid: 3, max_txid: 3 }), "{del:?}");
        assert!(del.contains(&SegmentName { level: 0, min_txid: 2, max_txid: 2 }), "ends at the snapshot: {del:?}");
        let left: Listing = listing.into_iter().filter(|(n, _)| !del.contains(n)).collect();
        assert!(super::super::plan::restore_plan(&left, super::super::plan::Target::Latest).is_ok(), "{left:?}");
        // Only the path is kept: a level-1 [4,5] takes over after [3,3],
        // and the level-0 segments it covers go.
        let listing =
            l(&[(9, 1, 2, 0), (0, 2, 2, 0), (0, 3, 3, 0), (0, 4, 4, 0), (0, 5, 5, 0), (1, 2, 3, 0), (1, 4, 5, 0)]);
        let del = deletable(&listing, 1000, &cfg, &levels);
        let seg = |level, min, max| SegmentName { level, min_txid: min, max_txid: max };
        assert_eq!(del, [seg(0, 2, 2), seg(0, 4, 4), seg(0, 5, 5)], "level 0 [3,3] alone stays");
        let left: Listing = listing.into_iter().filter(|(n, _)| !del.contains(n)).collect();
        assert!(super::super::plan::restore_plan(&left, super::super::plan::Target::Latest).is_ok(), "{left:?}");
    }

    #[test]
    fn a_level_is_aged_by_when_it_reached_the_store() {
        let cfg =
            RetentionConfig { snapshot_retention: Duration::from_secs(3600), l0_retention: Duration::from_millis(10) };
        let levels = CompactionConfig {
            level_intervals: vec![Duration::ZERO, Duration::from_millis(30), Duration::from_millis(300)],
        };
        // Level 1 3-5 holds transactions of t=100 but was uploaded at 990.
        let mut listing = l(&[(9, 1, 2, 0), (1, 3, 5, 100), (2, 3, 5, 100)]);
        let late = SegmentName { level: 1, min_txid: 3, max_txid: 5 };
        listing.get_mut(&late).unwrap().modified_ms = Some(990);
        assert!(!deletable(&listing, 1000, &cfg, &levels).contains(&late), "uploaded 10 ms ago");
        assert!(deletable(&listing, 1100, &cfg, &levels).contains(&late), "and 110 ms ago, past level 2's 30 ms");
    }

    #[test]
    fn what_is_deletable_changes_only_at_the_instants_foretold() {
        let (cfg, levels, mut listing) = two_snapshots();
        listing.get_mut(&SegmentName { level: 1, min_txid: 3, max_txid: 5 }).unwrap().modified_ms = Some(170);
        let mut now = 0;
        let mut changes = 0;
        while let Some(next) = next_change_ms(&listing, now, &cfg, &levels) {
            assert!(next > now);
            let here = deletable(&listing, now, &cfg, &levels);
            for t in now..next {
                assert_eq!(deletable(&listing, t, &cfg, &levels), here, "changed at {t}, foretold {next}");
            }
            changes += usize::from(deletable(&listing, next, &cfg, &levels) != here);
            now = next;
        }
        let last = deletable(&listing, now, &cfg, &levels);
        assert_eq!(deletable(&listing, now + 1_000_000, &cfg, &levels), last, "nothing changes after the last");
        assert!(changes >= 3, "the listing has several instants of change, found {changes}");
    }
}
