//! Upload ids, the temporary objects of an upload's parts, and the chain
//! of composes that assembles them. The contract gives the precondition
//! and the metadata only to `create-upload`, while GCS applies them to the
//! final compose, and a store instance must not rely on living until then:
//! so they travel inside the upload id the host hands back, with a random
//! nonce that names the upload's temporaries.

use crate::{MAX_COMPOSE, UPLOAD_DIR};
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sluice_sdk::{Error, Precondition, PutOptions};

/// An upload, as encoded in its id.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub nonce: u64,
    pub precondition: Precondition,
    pub metadata: Vec<(String, String)>,
}

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

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

fn dec(s: &str) -> Result<String, Error> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Error::invalid_config(format!("malformed upload id part {s:?}")))
}

impl Upload {
    pub fn new(nonce: u64, options: &PutOptions) -> Upload {
        Upload { nonce, precondition: options.precondition.clone(), metadata: options.metadata.clone() }
    }

    /// `n=NONCE[&p=a|&p=m:ETAG][&m=KEY:VALUE]...`, every part
    /// percent-encoded so no separator can be mistaken.
    pub fn encode(&self) -> String {
        let mut id = format!("n={:016x}", self.nonce);
        match &self.precondition {
            Precondition::None => {}
            Precondition::IfAbsent => id.push_str("&p=a"),
            Precondition::IfMatch(etag) => id.push_str(&format!("&p=m:{}", enc(etag))),
        }
        for (k, v) in &self.metadata {
            id.push_str(&format!("&m={}:{}", enc(k), enc(v)));
        }
        id
    }

    pub fn decode(id: &str) -> Result<Upload, Error> {
        let bad = || Error::invalid_config(format!("{id:?} is not an upload id of this plugin"));
        let mut upload = Upload { nonce: 0, precondition: Precondition::None, metadata: Vec::new() };
        let mut parts = id.split('&');
        let nonce = parts.next().and_then(|n| n.strip_prefix("n=")).ok_or_else(bad)?;
        upload.nonce = u64::from_str_radix(nonce, 16).map_err(|_| bad())?;
        for part in parts {
            match part.split_once('=') {
                Some(("p", "a")) => upload.precondition = Precondition::IfAbsent,
                Some(("p", m)) => {
                    let etag = m.strip_prefix("m:").ok_or_else(bad)?;
                    upload.precondition = Precondition::IfMatch(dec(etag)?);
                }
                Some(("m", kv)) => {
                    let (k, v) = kv.split_once(':').ok_or_else(bad)?;
                    upload.metadata.push((dec(k)?, dec(v)?));
                }
                _ => return Err(bad()),
            }
        }
        Ok(upload)
    }

    /// The directory (object-name prefix) of this upload's temporaries,
    /// below the replica's `prefix`.
    pub fn temp_dir(&self, prefix: &str) -> String {
        format!("{prefix}{UPLOAD_DIR}{:016x}/", self.nonce)
    }

    /// The temporary object of a part.
    pub fn part_name(&self, prefix: &str, part_number: u32) -> String {
        format!("{}part-{part_number:06}", self.temp_dir(prefix))
    }

    /// The composes that assemble `sources` in order: one when they fit a
    /// compose, else a chain where each step takes the previous step's
    /// result and the next sources.
    pub fn plan(&self, prefix: &str, sources: Vec<String>) -> Vec<Compose> {
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

    #[test]
    fn round_trips() {
        for precondition in
            [Precondition::None, Precondition::IfAbsent, Precondition::IfMatch("1796294631718665".into())]
        {
            let options = PutOptions {
                precondition,
                metadata: vec![("timestamp".into(), "2026-12-03T10:00:00Z".into()), ("a-b".into(), "x&y=z:w".into())],
                content_sha256: None,
            };
            let upload = Upload::new(0xfeed_0000_0000_0001, &options);
            assert_eq!(Upload::decode(&upload.encode()).unwrap(), upload);
        }
        assert!(Upload::decode("s3-upload-id").is_err());
        assert!(Upload::decode("n=zz").is_err());
    }

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
