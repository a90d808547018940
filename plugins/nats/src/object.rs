//! The object store's layout, as nats.go and nats.py write it: stream and
//! subject names, the meta record (JSON), digests, nuids, and which chunks
//! a byte range needs.

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// A meta-record header of this plugin's own: the stream sequence of the
/// object's first chunk, written only when its chunks were stored one after
/// another in full `CHUNK_SIZE` pieces, so a ranged read can fetch chunk `i`
/// at sequence `first + i`. NATS tools ignore it.
pub const FIRST_CHUNK_HEADER: &str = "Sluice-First-Chunk";

pub fn stream_name(bucket: &str) -> String {
    format!("OBJ_{bucket}")
}

pub fn chunk_subject(bucket: &str, nuid: &str) -> String {
    format!("$O.{bucket}.C.{nuid}")
}

/// Every meta subject of the bucket.
pub fn meta_filter(bucket: &str) -> String {
    format!("$O.{bucket}.M.>")
}

/// An object's meta subject: its name in padded base64url, as nats.go's
/// `base64.URLEncoding` writes it.
pub fn meta_subject(bucket: &str, name: &str) -> String {
    format!("$O.{bucket}.M.{}", URL_SAFE.encode(name))
}

/// The object name a meta subject stands for (padded or not).
pub fn name_of_meta_subject(bucket: &str, subject: &str) -> Option<String> {
    let encoded = subject.strip_prefix(&format!("$O.{bucket}.M."))?;
    let bytes = URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')).ok()?;
    String::from_utf8(bytes).ok()
}

/// `SHA-256=<base64url>`, the digest nats tools check on read.
pub fn digest(data: &[u8]) -> String {
    format!("SHA-256={}", URL_SAFE.encode(Sha256::digest(data)))
}

/// A 22-character base62 id like nats.go's nuids, from 128 random bits:
/// names the chunk subject of one version of an object.
pub fn nuid(a: u64, b: u64) -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut n = (u128::from(a) << 64) | u128::from(b);
    let mut out = [b'0'; 22];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `options` of a meta record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaOptions {
    /// A link to another object; this plugin neither writes nor follows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chunk_size: Option<u32>,
}

/// The meta record of an object (nats.go's `ObjectInfo`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Vec<String>>,
    /// The contract's object metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<MetaOptions>,
    #[serde(default)]
    pub bucket: String,
    #[serde(default)]
    pub nuid: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub mtime: String,
    #[serde(default)]
    pub chunks: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

impl ObjectInfo {
    /// The chunk size the writer used (nats.go's default when unsaid).
    pub fn chunk_size(&self) -> u64 {
        self.options.as_ref().and_then(|o| o.max_chunk_size).map_or(crate::CHUNK_SIZE as u64, u64::from).max(1)
    }

    /// The sequence of the first chunk, when this plugin wrote them in a
    /// row (see `FIRST_CHUNK_HEADER`).
    pub fn first_chunk(&self) -> Option<u64> {
        self.headers.get(FIRST_CHUNK_HEADER)?.first()?.parse().ok()
    }

    pub fn is_link(&self) -> bool {
        self.options.as_ref().is_some_and(|o| o.link.is_some())
    }
}

/// The chunks a range of an object of `size` bytes needs when every chunk
/// but the last holds `chunk` bytes: (first index, last index, offset in
/// the first chunk, bytes wanted); `None` when it selects nothing.
pub fn chunk_span(size: u64, chunk: u64, offset: u64, length: u64) -> Option<(u64, u64, u64, u64)> {
    let end = offset.saturating_add(length).min(size);
    if offset >= end {
        return None;
    }
    Some((offset / chunk, (end - 1) / chunk, offset % chunk, end - offset))
}

/// Milliseconds since the epoch as RFC 3339 UTC (`mtime`).
pub fn rfc3339(ms: u64) -> String {
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// RFC 3339 (as the server writes message times, UTC with nanoseconds)
/// to milliseconds since the epoch.
pub fn parse_rfc3339(t: &str) -> Option<u64> {
    let t = t.strip_suffix('Z')?;
    let (date, time) = t.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, mo, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut c = hms.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (h, mi, s) = (c.next()??, c.next()??, c.next()??);
    let ms: u64 = format!("{frac:0<3}")[..3].parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(days * 86_400_000 + h * 3_600_000 + mi * 60_000 + s * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_nats_go() {
        assert_eq!(stream_name("b"), "OBJ_b");
        assert_eq!(chunk_subject("b", "N"), "$O.b.C.N");
        // nats.go: base64.URLEncoding, padded.
        assert_eq!(meta_subject("b", "a"), "$O.b.M.YQ==");
        assert_eq!(meta_subject("b", "x/ü?"), "$O.b.M.eC_DvD8=");
        assert_eq!(name_of_meta_subject("b", "$O.b.M.eC_DvD8=").as_deref(), Some("x/ü?"));
        assert_eq!(name_of_meta_subject("b", "$O.b.M.YQ").as_deref(), Some("a"), "unpadded too");
        assert_eq!(name_of_meta_subject("b", "$O.c.M.YQ=="), None);
        assert_eq!(meta_filter("b"), "$O.b.M.>");
    }

    #[test]
    fn digests_and_nuids() {
        // SHA-256 of "abc", base64url with padding.
        assert_eq!(digest(b"abc"), "SHA-256=ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0=");
        let n = nuid(u64::MAX, u64::MAX);
        assert_eq!(n.len(), 22);
        assert!(n.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(nuid(1, 2), nuid(1, 3));
    }

    #[test]
    fn meta_records_round_trip_and_read_nats_gos() {
        let go = r#"{"name":"db/0001.ltx","description":"","options":{"max_chunk_size":131072},"bucket":"b","nuid":"N","size":5,"mtime":"0001-01-01T00:00:00Z","chunks":1,"digest":"SHA-256=x"}"#;
        let info: ObjectInfo = serde_json::from_str(go).unwrap();
        assert_eq!((info.size, info.chunks, info.chunk_size(), info.deleted), (5, 1, 131_072, false));
        assert_eq!(info.first_chunk(), None);
        let mut mine = info.clone();
        mine.metadata.insert("txid".into(), "ff".into());
        mine.headers.insert(FIRST_CHUNK_HEADER.into(), vec!["17".into()]);
        let text = serde_json::to_string(&mine).unwrap();
        assert!(!text.contains("deleted") && text.contains("\"metadata\":{\"txid\":\"ff\"}"), "{text}");
        let back: ObjectInfo = serde_json::from_str(&text).unwrap();
        assert_eq!((back.first_chunk(), back), (Some(17), mine));
        let deleted: ObjectInfo = serde_json::from_str(r#"{"name":"x","deleted":true,"unknown":1}"#).unwrap();
        assert!(deleted.deleted && deleted.chunk_size() == crate::CHUNK_SIZE as u64);
    }

    #[test]
    fn ranges_pick_only_the_chunks_they_need() {
        let c = 100;
        assert_eq!(chunk_span(250, c, 0, 10), Some((0, 0, 0, 10)));
        assert_eq!(chunk_span(250, c, 95, 10), Some((0, 1, 95, 10)));
        assert_eq!(chunk_span(250, c, 243, 100), Some((2, 2, 43, 7)));
        assert_eq!(chunk_span(250, c, 0, u64::MAX), Some((0, 2, 0, 250)));
        assert_eq!(chunk_span(250, c, 250, 10), None);
        assert_eq!(chunk_span(250, c, 10, 0), None);
    }

    #[test]
    fn times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_764_092_729_123), "2025-11-25T17:45:29.123Z");
        assert_eq!(parse_rfc3339("2025-11-25T17:45:29.123456789Z"), Some(1_764_092_729_123));
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Some(1_709_164_800_000));
        assert_eq!(parse_rfc3339(&rfc3339(951_782_400_007)), Some(951_782_400_007));
        assert_eq!(parse_rfc3339("0001-01-01T00:00:00Z"), None, "before the epoch");
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
