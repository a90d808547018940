//! Multipart upload ids that carry what the final commit needs. The
//! contract gives the precondition and the metadata only to
//! `create-upload`, while most stores apply them when the upload is
//! committed, and a store instance must not rely on living until then: so
//! they travel inside the upload id the host hands back, with a random
//! nonce that keeps two uploads of one key apart (it can name their parts).

use crate::{Error, Precondition, PutOptions};
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// An upload, as encoded in its id (`encode`, `decode`).
#[derive(Debug, Clone, PartialEq)]
pub struct UploadId {
    /// Random per upload (`crate::random_u64`).
    pub nonce: u64,
    /// Applies to the committed object.
    pub precondition: Precondition,
    /// Stored with the committed object.
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

impl UploadId {
    /// A new upload of an object to be put with `options`.
    pub fn new(nonce: u64, options: &PutOptions) -> UploadId {
        UploadId { nonce, precondition: options.precondition.clone(), metadata: options.metadata.clone() }
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

    /// The upload an id of `encode` stands for.
    pub fn decode(id: &str) -> Result<UploadId, Error> {
        let bad = || Error::invalid_config(format!("{id:?} is not an upload id of this plugin"));
        let mut upload = UploadId { nonce: 0, precondition: Precondition::None, metadata: Vec::new() };
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
            let upload = UploadId::new(0xfeed_0000_0000_0001, &options);
            assert_eq!(UploadId::decode(&upload.encode()).unwrap(), upload);
        }
        assert!(UploadId::decode("s3-upload-id").is_err());
        assert!(UploadId::decode("n=zz").is_err());
    }
}
