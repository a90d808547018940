//! The fixed parts of a segment: header, index entries, trailer, and the
//! object names. See FORMAT.md beside this file.

use crate::checksum::bytes_hash;

/// Wall-clock milliseconds since the epoch: the unit of every timestamp a
/// segment carries (0 if the clock is before the epoch).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The first six bytes of a segment's header and trailer magic; the last
/// two are the format version.
pub const MAGIC: [u8; 6] = *b"SLCSEG";
pub const END_MAGIC: [u8; 6] = *b"SLCEND";
/// Version 1: pages ascend across the whole segment, each stored once.
pub const VERSION_ASCENDING: u16 = 1;
/// Version 2: pages ascend within a block only, and a later block's copy
/// of a page replaces an earlier one. A compaction writes it when it
/// copies input blocks as they are instead of recompressing their pages.
pub const VERSION_BLOCKS: u16 = 2;
pub const HEADER_SIZE: usize = 88;
pub const TRAILER_SIZE: usize = 16;
pub const INDEX_ENTRY_SIZE: usize = 20;
/// Flag bit reserved for client-side encryption (not in v1).
pub const FLAG_ENCRYPTED: u32 = 1;
/// Level of snapshots.
pub const SNAPSHOT_LEVEL: u32 = 9;

/// Errors reading a segment; always name what is wrong so an operator can
/// tell a corrupt object from a bug.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("not a sluice segment (bad magic)")]
    BadMagic,
    #[error("segment format version {0} is not supported by this sluice (it reads versions 1 and 2): upgrade sluice")]
    Version(u16),
    #[error("segment uses flags {0:#x} this sluice does not support (encrypted?)")]
    Flags(u32),
    #[error("segment header is corrupt (checksum mismatch)")]
    HeaderChecksum,
    #[error("segment is truncated or corrupt: {0}")]
    Corrupt(String),
    #[error("segment content checksum mismatch: the object is corrupt")]
    FileChecksum,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `VERSION_ASCENDING` or `VERSION_BLOCKS`; the writer decides at
    /// `finish`.
    pub version: u16,
    pub flags: u32,
    pub page_size: u32,
    pub min_txid: u64,
    pub max_txid: u64,
    pub db_pages: u32,
    pub page_count: u32,
    pub block_count: u32,
    pub timestamp_ms: i64,
    pub pre_checksum: u64,
    pub post_checksum: u64,
    pub index_offset: u64,
}

impl Default for Header {
    fn default() -> Self {
        Header { version: VERSION_ASCENDING, flags: 0, page_size: 0, min_txid: 0, max_txid: 0, db_pages: 0, page_count: 0, block_count: 0, timestamp_ms: 0, pre_checksum: 0, post_checksum: 0, index_offset: 0 }
    }
}

impl Header {
    pub fn is_snapshot(&self) -> bool {
        self.min_txid == 1
    }

    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..6].copy_from_slice(&MAGIC);
        b[6..8].copy_from_slice(&self.version.to_be_bytes());
        b[8..12].copy_from_slice(&self.flags.to_be_bytes());
        b[12..16].copy_from_slice(&self.page_size.to_be_bytes());
        b[16..24].copy_from_slice(&self.min_txid.to_be_bytes());
        b[24..32].copy_from_slice(&self.max_txid.to_be_bytes());
        b[32..36].copy_from_slice(&self.db_pages.to_be_bytes());
        b[36..40].copy_from_slice(&self.page_count.to_be_bytes());
        b[40..44].copy_from_slice(&self.block_count.to_be_bytes());
        b[48..56].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        b[56..64].copy_from_slice(&self.pre_checksum.to_be_bytes());
        b[64..72].copy_from_slice(&self.post_checksum.to_be_bytes());
        b[72..80].copy_from_slice(&self.index_offset.to_be_bytes());
        let hash = bytes_hash(&b[..80]);
        b[80..88].copy_from_slice(&hash.to_be_bytes());
        b
    }

    /// The trailer's magic for this header's version.
    pub fn end_magic(&self) -> [u8; 8] {
        let mut m = [0u8; 8];
        m[..6].copy_from_slice(&END_MAGIC);
        m[6..].copy_from_slice(&self.version.to_be_bytes());
        m
    }

    pub fn decode(b: &[u8]) -> Result<Header, FormatError> {
        if b.len() < HEADER_SIZE {
            return Err(FormatError::Corrupt(format!("header is {} bytes, expected {HEADER_SIZE}", b.len())));
        }
        if b[0..6] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let version = u16::from_be_bytes([b[6], b[7]]);
        if version != VERSION_ASCENDING && version != VERSION_BLOCKS {
            return Err(FormatError::Version(version));
        }
        if bytes_hash(&b[..80]) != be64(b, 80) {
            return Err(FormatError::HeaderChecksum);
        }
        let h = Header {
            version,
            flags: be32(b, 8),
            page_size: be32(b, 12),
            min_txid: be64(b, 16),
            max_txid: be64(b, 24),
            db_pages: be32(b, 32),
            page_count: be32(b, 36),
            block_count: be32(b, 40),
            timestamp_ms: be64(b, 48) as i64,
            pre_checksum: be64(b, 56),
            post_checksum: be64(b, 64),
            index_offset: be64(b, 72),
        };
        if h.flags != 0 {
            return Err(FormatError::Flags(h.flags));
        }
        if !(512..=65536).contains(&h.page_size) || !h.page_size.is_power_of_two() {
            return Err(FormatError::Corrupt(format!("page size {}", h.page_size)));
        }
        if h.min_txid == 0 || h.min_txid > h.max_txid {
            return Err(FormatError::Corrupt(format!("TXID range {}-{}", h.min_txid, h.max_txid)));
        }
        Ok(h)
    }
}

pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

/// One index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub offset: u64,
    pub first_pgno: u32,
    pub last_pgno: u32,
    pub pages: u32,
}

/// A segment's identity as its object name says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentName {
    pub level: u32,
    pub min_txid: u64,
    pub max_txid: u64,
}

impl SegmentName {
    /// `<level 4 hex>/<min 16 hex>-<max 16 hex>.seg`
    pub fn key(&self) -> String {
        format!("{:04x}/{:016x}-{:016x}.seg", self.level, self.min_txid, self.max_txid)
    }

    /// Parse a key relative to the replica root; `None` for other objects.
    pub fn parse(key: &str) -> Option<SegmentName> {
        let (level, rest) = key.split_once('/')?;
        let rest = rest.strip_suffix(".seg")?;
        let (min, max) = rest.split_once('-')?;
        if level.len() != 4 || min.len() != 16 || max.len() != 16 {
            return None;
        }
        let name = SegmentName {
            level: u32::from_str_radix(level, 16).ok()?,
            min_txid: u64::from_str_radix(min, 16).ok()?,
            max_txid: u64::from_str_radix(max, 16).ok()?,
        };
        (name.min_txid >= 1 && name.min_txid <= name.max_txid).then_some(name)
    }

    pub fn is_snapshot(&self) -> bool {
        self.level == SNAPSHOT_LEVEL
    }
}

impl std::fmt::Display for SegmentName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_and_corruption() {
        let h = Header { version: 1, page_size: 4096, min_txid: 3, max_txid: 9, db_pages: 10, page_count: 2, block_count: 1, timestamp_ms: 1_700_000_000_000, pre_checksum: 5, post_checksum: 6, index_offset: 200, flags: 0 };
        let mut b = h.encode();
        assert_eq!(Header::decode(&b).unwrap(), h);
        b[20] ^= 1;
        assert!(matches!(Header::decode(&b), Err(FormatError::HeaderChecksum)));
        let v2 = Header { version: VERSION_BLOCKS, ..h };
        assert_eq!(Header::decode(&v2.encode()).unwrap(), v2);
        let mut v3 = h.encode();
        v3[7] = 3;
        assert!(matches!(Header::decode(&v3), Err(FormatError::Version(3))));
    }

    #[test]
    fn names_sort_and_parse() {
        let a = SegmentName { level: 0, min_txid: 0x10, max_txid: 0x1f };
        assert_eq!(a.key(), "0000/0000000000000010-000000000000001f.seg");
        assert_eq!(SegmentName::parse(&a.key()), Some(a));
        assert_eq!(SegmentName::parse("0000/zz.seg"), None);
        assert_eq!(SegmentName::parse("sluice-check-1/x"), None);
        let b = SegmentName { level: 0, min_txid: 0x100, max_txid: 0x100 };
        assert!(a.key() < b.key());
    }
}
