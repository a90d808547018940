//! Upload ids, the temporary objects of an upload's parts, and the chain
//! of composes that assembles them. The contract gives the precondition
//! and the metadata only to `create-upload`, while GCS applies them to the
//! final compose, and a store instance must not rely on living until then:
//! so they travel inside the upload id the host hands back (the SDK's
//! `UploadId`), with a random nonce that names the upload's temporaries.

use crate::{MAX_COMPOSE, UPLOAD_DIR};
pub use sluice_sdk::upload::UploadId as Upload;

/// Where one compose writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An intermediate temporary (its object name).
    Temporary(String),
    /// The upload's object, with the precondition and metadata.
    Final,
}

/// One compose: its sources (object names, in order) and its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compose {
    pub sources: Vec<String>,
    pub target: Target,
}

/// Where an upload's parts live, and how they are composed.
pub trait Parts {
    /// The directory (object-name prefix) of this upload's temporaries.
    fn temp_dir(&self, prefix: &str) -> String;
    /// The temporary object of a part.
    fn part_name(&self, prefix: &str, part_number: u32) -> String;
    /// The composes that assemble `sources` in order.
    fn plan(&self, prefix: &str, sources: Vec<String>) -> Vec<Compose>;
}

impl Parts for Upload {
    /// The directory (object-name prefix) of this upload's temporaries,
    /// below the replica's `prefix`.
    fn temp_dir(&self, prefix: &str) -> String {
        format!("{prefix}{UPLOAD_DIR}{:016x}/", self.nonce)
    }

    /// The temporary object of a part.
    fn part_name(&self, prefix: &str, part_number: u32) -> String {
        format!("{}part-{part_number:06}", self.temp_dir(prefix))
    }

    /// The composes that assemble `sources` in order: one when they fit a
    /// compose, else a chain where each step takes the previous step's
    /// result and the next sources.
    fn plan(&self, prefix: &str, sources: Vec<String>) -> Vec<Compose> {
        let mut steps = Vec::new();
        let mut rest = sources.into_iter().peekable();
        let mut carried: Option<String> = None;
        loop {
            let room = MAX_COMPOSE - usize::from(carried.is_some());
            let mut batch: Vec<String> = carried.take().into_iter().collect();
            batch.extend(rest.by_ref().take(room));
            if rest.peek().is_none() {
                steps.push(Compose { sources: batch, target: Target::Final });
                return steps;
            }
            let name = format!("{}chain-{:06}", self.temp_dir(prefix), steps.len() + 1);
            steps.push(Compose { sources: batch, target: Target::Temporary(name.clone()) });
            carried = Some(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::Precondition;

    #[test]
    fn temporaries_live_in_the_upload_directory() {
        let u = Upload { nonce: 0xab, precondition: Precondition::None, metadata: vec![] };
        assert_eq!(u.part_name("db/", 7), "db/.sluice-upload/00000000000000ab/part-000007");
        assert_eq!(u.temp_dir(""), ".sluice-upload/00000000000000ab/");
    }

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("p{i}")).collect()
    }

    #[test]
    fn composes_chain_past_32_sources() {
        let u = Upload { nonce: 1, precondition: Precondition::IfAbsent, metadata: vec![] };
        for n in [1, 31, 32] {
            assert_eq!(u.plan("", names(n)), vec![Compose { sources: names(n), target: Target::Final }]);
        }
        let plan = u.plan("d/", names(33));
        assert_eq!(plan.len(), 2);
        assert_eq!(
            plan[0],
            Compose { sources: names(32), target: Target::Temporary(u.temp_dir("d/") + "chain-000001") }
        );
        assert_eq!(plan[1].sources, vec![u.temp_dir("d/") + "chain-000001", "p33".to_string()]);
        assert_eq!(plan[1].target, Target::Final);
        // 100 parts: 32, then 31 more three times (32 + 31 + 31 = 94), then 6.
        let plan = u.plan("", names(100));
        assert_eq!(plan.iter().map(|c| c.sources.len()).collect::<Vec<_>>(), [32, 32, 32, 7]);
        assert!(plan.iter().all(|c| c.sources.len() <= MAX_COMPOSE));
        // Every part appears once, in order, after the carried result.
        let parts: Vec<&String> =
            plan.iter().flat_map(|c| c.sources.iter()).filter(|s| !s.contains("chain-")).collect();
        assert_eq!(parts, names(100).iter().collect::<Vec<_>>());
    }
}
