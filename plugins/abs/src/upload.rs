//! Upload ids and block ids. The contract gives the precondition and the
//! metadata only to `create-upload`, while Azure applies them when the
//! block list is committed, and a store instance must not rely on living
//! until then: so they travel inside the upload id the host hands back,
//! with a random nonce that keeps two uploads' blocks apart.

use base64::Engine;
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sluice_sdk::{Error, Precondition, PutOptions};

/// An upload, as encoded in its id.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub nonce: u64,
    pub precondition: Precondition,
    pub metadata: Vec<(String, String)>,
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

    /// The block id of a part: one length for every block of every upload
    /// (Azure requires it per blob), base64 as the API wants.
    pub fn block_id(&self, part_number: u32) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("{:016x}-{part_number:06}", self.nonce))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for precondition in [Precondition::None, Precondition::IfAbsent, Precondition::IfMatch("\"0x8D:&=\"".into())] {
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
    fn block_ids_have_one_length() {
        let a = Upload { nonce: 1, precondition: Precondition::None, metadata: vec![] };
        let b = Upload { nonce: u64::MAX, ..a.clone() };
        assert_eq!(a.block_id(1).len(), b.block_id(50_000).len());
        assert_ne!(a.block_id(1), a.block_id(2));
    }
}
