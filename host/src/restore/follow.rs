//! `restore -f`: after restoring, keep applying new segments to the output.
//! Each step is verified like a restore (the checksum before each segment
//! must match the file), so a follower never drifts; if the replica's chain
//! restarted with a new snapshot, the output is rebuilt from it. What to do
//! at each look is `next_step`, a pure function; the I/O around it is thin.

use super::{RestoreOptions, RestoreOutcome, apply_segments, restore_from_listing};
use crate::checksum::PageHashes;
use crate::plugin::PluginStore;
use crate::replica::client::{self, Listing};
use crate::replica::plan::{Target, follow_plan};
use crate::segment::SegmentName;
use crate::segment::format::misnamed_in;
use anyhow::Context;

/// What a look at the replica calls for.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Wait,
    /// Apply these segments, which continue from the output's TXID.
    Apply(Vec<SegmentName>),
    /// Rebuild the output from the newest snapshot.
    Rebuild,
}

/// The step for a follower at `txid`, `rebuild` if it already knows the
/// output must be rebuilt: segments that continue its chain are applied;
/// with none, a snapshot past it that no segment continues from it means
/// the replica restarted its chain (a rebuild).
fn next_step(listing: &Listing, txid: u64, rebuild: bool) -> Step {
    if rebuild {
        return Step::Rebuild;
    }
    let plan = follow_plan(listing, txid);
    if !plan.is_empty() {
        return Step::Apply(plan);
    }
    let restarted =
        listing.keys().any(|n| n.is_snapshot() && n.max_txid > txid) && !listing.keys().any(|n| n.min_txid == txid + 1);
    if restarted { Step::Rebuild } else { Step::Wait }
}

/// The follower's state between looks.
struct Follower<'a> {
    store: &'a PluginStore,
    opts: &'a RestoreOptions,
    txid: u64,
    hashes: Option<PageHashes>,
    /// Set when the output can no longer be extended in place (the chain
    /// restarted, or applying failed part-way); cleared by a rebuild.
    rebuild: bool,
}

/// Follow every `interval` until `stop`.
pub async fn follow(
    store: &PluginStore,
    opts: &RestoreOptions,
    first: RestoreOutcome,
    interval: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut f = Follower { store, opts, txid: first.txid, hashes: first.hashes, rebuild: false };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return Ok(()),
        }
        let listing = match client::list(store).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("follow: cannot list {} (will retry): {e}", store.url());
                continue;
            }
        };
        match next_step(&listing, f.txid, f.rebuild) {
            Step::Wait => {}
            Step::Rebuild => f.rebuild(&listing).await?,
            Step::Apply(plan) => f.apply(&listing, &plan).await?,
        }
    }
}

impl Follower<'_> {
    fn output(&self) -> std::path::Display<'_> {
        self.opts.output.display()
    }

    /// Rebuild from the newest snapshot. A live replica's listing can
    /// briefly show a new chain whose later segments are still being
    /// uploaded; a failed rebuild keeps the previous output (restore writes
    /// OUT.tmp) and tries again, unless a segment is misnamed (immutable:
    /// it stays so).
    async fn rebuild(&mut self, listing: &Listing) -> anyhow::Result<()> {
        if !self.rebuild {
            tracing::info!("follow: the replica restarted its chain with a snapshot; rebuilding {}", self.output());
            self.rebuild = true;
        }
        let opts = RestoreOptions { force: true, target: Target::Latest, ..self.opts.clone() };
        match restore_from_listing(self.store, listing, &opts).await {
            Ok(again) => {
                (self.txid, self.hashes, self.rebuild) = (again.txid, again.hashes, false);
                tracing::info!("follow: rebuilt {} at TXID {:016x}", self.output(), self.txid);
            }
            Err(e) if misnamed_in(&e) => return Err(e.context(format!("follow: cannot rebuild {}", self.output()))),
            Err(e) => tracing::warn!("follow: cannot rebuild {} yet (will retry): {e:#}", self.output()),
        }
        Ok(())
    }

    /// Apply `plan` in place. A segment holding another's bytes stops the
    /// follower, naming it (checked before its pages are applied, so the
    /// output is the verified state before it); any other failure may have
    /// left part of the step, so the output is rebuilt.
    async fn apply(&mut self, listing: &Listing, plan: &[SegmentName]) -> anyhow::Result<()> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.opts.output)
            .with_context(|| format!("cannot open {}", self.output()))?;
        let quiet = RestoreOptions { progress: false, ..self.opts.clone() };
        match apply_segments(self.store, listing, plan, file, self.hashes.take(), &self.opts.output, &quiet).await {
            Ok((_, after)) => {
                self.hashes = after;
                self.txid = plan.last().map_or(self.txid, |n| n.max_txid);
                tracing::info!(
                    "follow: applied {} segments to {}, now at TXID {:016x}",
                    plan.len(),
                    self.output(),
                    self.txid
                );
            }
            Err(e) if misnamed_in(&e) => {
                return Err(e.context(format!("follow: cannot apply new segments to {}", self.output())));
            }
            Err(e) => {
                tracing::warn!("follow: cannot apply new segments to {} (will rebuild): {e:#}", self.output());
                self.rebuild = true;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::client::RemoteSegment;

    fn listing(names: &[(u32, u64, u64)]) -> Listing {
        let seg = RemoteSegment { size: 1, timestamp_ms: 0, modified_ms: None, parts: 0 };
        names
            .iter()
            .map(|&(level, min_txid, max_txid)| (SegmentName { level, min_txid, max_txid }, seg.clone()))
            .collect()
    }

    #[test]
    fn segments_that_continue_the_output_are_applied() {
        let l = listing(&[(9, 1, 5), (0, 6, 6), (0, 7, 8)]);
        let Step::Apply(plan) = next_step(&l, 5, false) else { panic!("no apply") };
        assert_eq!(plan.last().unwrap().max_txid, 8);
        assert_eq!(next_step(&l, 8, false), Step::Wait);
    }

    #[test]
    fn a_new_chain_past_the_output_is_a_rebuild() {
        // The replica's chain restarted: a new snapshot, and nothing that
        // continues the follower's TXID 8.
        let l = listing(&[(9, 1, 9)]);
        assert_eq!(next_step(&l, 8, false), Step::Rebuild);
        // A snapshot past the output while its own chain goes on: apply.
        let l = listing(&[(9, 1, 10), (0, 9, 9), (0, 10, 10)]);
        assert!(matches!(next_step(&l, 8, false), Step::Apply(_)));
    }

    #[test]
    fn a_pending_rebuild_is_retried_whatever_the_listing() {
        assert_eq!(next_step(&listing(&[(9, 1, 5), (0, 6, 6)]), 5, true), Step::Rebuild);
    }
}
