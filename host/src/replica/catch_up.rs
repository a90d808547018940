//! A replica that fell behind (the store was down or slow) sends its
//! backlog of level-0 segments merged into a few, instead of one upload per
//! sync: uploads cost a round trip and a plugin call each, and one at a
//! time a replica behind by minutes gained on the application by little
//! more than it wrote (11-18 TXIDs/s against a writer's 10, in a debug
//! build; issue 19's fault matrix). The merge is compaction's; restore
//! points inside a merged run are given up, as compaction gives them up
//! later anyway, and only for the time the store could not keep up.

use crate::capture::SpoolEntry;

/// Fewer pending level-0 segments than this go up one by one, keeping
/// every restore point: a steady replica is one or two behind.
pub const MIN_SEGMENTS: usize = 16;
/// Most segments merged into one upload: bounds a merge's time, so
/// shipping is never far from its next chance to send what is new.
pub const MAX_SEGMENTS: usize = 512;
/// Most bytes merged into one upload: a run past this is sent in several.
pub const MAX_BYTES: u64 = 32 << 20;

/// The level-0 segments after `shipped` to send as one: contiguous from
/// `shipped + 1`, at most `MAX_SEGMENTS` and `MAX_BYTES` (always at least
/// two), and only if at least `MIN_SEGMENTS` are pending. `ends_at`, the
/// end of a level-0 segment from `shipped + 1` the replica already lists
/// (an earlier attempt whose answer was lost), ends the run there too: the
/// retry then has the same name and is recognised as ours, where a run
/// with another end would overlap it.
pub fn backlog(spool: &[SpoolEntry], shipped: u64, ends_at: Option<u64>) -> Vec<SpoolEntry> {
    if shipped == 0 {
        return Vec::new();
    }
    let mut level0: Vec<&SpoolEntry> = spool.iter().filter(|e| e.name.level == 0).collect();
    level0.sort_by_key(|e| e.name.min_txid);
    let (mut run, mut bytes, mut next) = (Vec::new(), 0u64, shipped + 1);
    for e in level0.into_iter().skip_while(|e| e.name.min_txid <= shipped) {
        let full = match ends_at {
            Some(end) => e.name.max_txid > end,
            None => run.len() >= MAX_SEGMENTS || (run.len() >= 2 && bytes + e.size > MAX_BYTES),
        };
        if e.name.min_txid != next || full {
            break;
        }
        bytes += e.size;
        next = e.name.max_txid + 1;
        run.push(e.clone());
    }
    let pending = spool.iter().filter(|e| e.name.level == 0 && e.name.min_txid > shipped).count();
    if pending < MIN_SEGMENTS || run.len() < 2 { Vec::new() } else { run }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::SegmentName;
    use std::path::PathBuf;

    fn l0(txid: u64, size: u64) -> SpoolEntry {
        SpoolEntry {
            name: SegmentName { level: 0, min_txid: txid, max_txid: txid },
            path: PathBuf::from(format!("{txid}")),
            size,
            timestamp_ms: 0,
        }
    }

    #[test]
    fn a_long_backlog_goes_as_one_run_a_short_one_segment_by_segment() {
        let spool: Vec<SpoolEntry> = (1..=40).map(|t| l0(t, 100)).collect();
        let run = backlog(&spool, 10, None);
        assert_eq!((run.first().unwrap().name.min_txid, run.last().unwrap().name.max_txid), (11, 40));
        assert!(backlog(&spool, 30, None).is_empty(), "10 pending go one by one");
        assert!(backlog(&spool, 0, None).is_empty(), "a replica with nothing gets a snapshot, not a run");
    }

    #[test]
    fn a_retry_ends_where_the_attempt_the_replica_holds_ended() {
        let spool: Vec<SpoolEntry> = (1..=100).map(|t| l0(t, 100)).collect();
        let run = backlog(&spool, 10, Some(40));
        assert_eq!((run.first().unwrap().name.min_txid, run.last().unwrap().name.max_txid), (11, 40));
    }

    #[test]
    fn a_run_stops_at_a_gap_and_at_its_bounds() {
        let mut spool: Vec<SpoolEntry> = (1..=40).map(|t| l0(t, 100)).filter(|e| e.name.min_txid != 25).collect();
        let run = backlog(&spool, 10, None);
        assert_eq!(run.last().unwrap().name.max_txid, 24, "the run ends before the missing TXID");
        spool = (1..=40).map(|t| l0(t, MAX_BYTES / 4)).collect();
        assert_eq!(backlog(&spool, 10, None).len(), 4, "bytes bound the run");
        spool = (1..=(MAX_SEGMENTS as u64 + 100)).map(|t| l0(t, 1)).collect();
        assert_eq!(backlog(&spool, 1, None).len(), MAX_SEGMENTS);
        spool = (1..=40).map(|t| l0(t, MAX_BYTES)).collect();
        assert_eq!(backlog(&spool, 10, None).len(), 2, "two at least, whatever their size");
    }
}
