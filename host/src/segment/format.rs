//! The fixed parts of a segment: header, index entries, trailer, and the
//! object names. See FORMAT.md beside this file.

use crate::checksum::bytes_hash;

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
/// Flag bit of an encrypted segment's outer header (`sealed.rs`); the
/// segment inside has no flags.
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
    #[error("segment uses flags {0:#x} this sluice does not support: upgrade sluice")]
    Flags(u32),
    /// An encrypted segment met where no age identities are configured.
    #[error(
        "segment is encrypted (age): read it through a config whose replica has `age: {{identities: [...]}}` that decrypt it"
    )]
    Encrypted,
    #[error("segment header is corrupt (checksum mismatch)")]
    HeaderChecksum,
    #[error("segment is truncated or corrupt: {0}")]
    Corrupt(String),
    #[error("segment content checksum mismatch: the object is corrupt")]
    FileChecksum,
    /// The header describes another segment than the object's name: its
    /// bytes were copied or renamed. Waiting does not fix it.
    #[error("the object holds another segment (copied or renamed?): {0}")]
    Misnamed(String),
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
        Header {
            version: VERSION_ASCENDING,
            flags: 0,
            page_size: 0,
            min_txid: 0,
            max_txid: 0,
            db_pages: 0,
            page_count: 0,
            block_count: 0,
            timestamp_ms: 0,
            pre_checksum: 0,
            post_checksum: 0,
            index_offset: 0,
        }
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

    /// Decode a plaintext segment's header (no flags set).
    pub fn decode(b: &[u8]) -> Result<Header, FormatError> {
        let h = Header::decode_any(b)?;
        match h.flags {
            0 => Ok(h),
            FLAG_ENCRYPTED => Err(FormatError::Encrypted),
            other => Err(FormatError::Flags(other)),
        }
    }

    /// Decode a header whatever its flags (a sealed object's outer one).
    pub fn decode_any(b: &[u8]) -> Result<Header, FormatError> {
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

    /// The key flattened into one file name, `<level>-<min>-<max>.seg`:
    /// how local copies (the spool, restore's downloads) are named.
    pub fn file_name(&self) -> String {
        self.key().replacen('/', "-", 1)
    }

    /// Parse a `file_name`; `None` for other files.
    pub fn parse_file_name(file: &str) -> Option<SegmentName> {
        let (level, rest) = file.split_once('-')?;
        SegmentName::parse(&format!("{level}/{rest}"))
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

    /// Check that `header`, read from the object named `self`, is the
    /// segment the name says: same TXID range and, for a snapshot, one
    /// that starts from an empty database. The level is not in the header;
    /// two valid segments with the same range describe the same change (the
    /// checksums before and after, checked on apply, agree), so only what
    /// the range implies is checked.
    pub fn check_header(&self, header: &Header) -> Result<(), FormatError> {
        if (header.min_txid, header.max_txid) != (self.min_txid, self.max_txid) {
            return Err(FormatError::Misnamed(format!(
                "its header says TXIDs {:016x}-{:016x}, its name {:016x}-{:016x}",
                header.min_txid, header.max_txid, self.min_txid, self.max_txid
            )));
        }
        if self.is_snapshot() && (header.min_txid != 1 || header.pre_checksum != 0) {
            return Err(FormatError::Misnamed(format!(
                "named a snapshot, but its header starts at TXID {:016x} from database checksum {:016x}",
                header.min_txid, header.pre_checksum
            )));
        }
        Ok(())
    }
}

/// Whether `e` was caused by a segment refused by [`SegmentName::check_header`]:
/// corrupt data, which retrying does not fix.
pub fn misnamed_in(e: &anyhow::Error) -> bool {
    e.chain().any(|c| matches!(c.downcast_ref::<FormatError>(), Some(FormatError::Misnamed(_))))
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
    fn a_file_name_is_the_key_flattened_and_parses_back() {
        let name = SegmentName { level: 9, min_txid: 1, max_txid: 0x2a };
        assert_eq!(name.file_name(), "0009-0000000000000001-000000000000002a.seg");
        assert_eq!(SegmentName::parse_file_name(&name.file_name()), Some(name));
        assert_eq!(SegmentName::parse_file_name("0009-0000000000000001-000000000000002a.seg.123.tmp"), None);
        assert_eq!(SegmentName::parse_file_name("state.0"), None);
    }

    #[test]
    fn header_roundtrip_and_corruption() {
        let h = Header {
            version: 1,
            page_size: 4096,
            min_txid: 3,
            max_txid: 9,
            db_pages: 10,
            page_count: 2,
            block_count: 1,
            timestamp_ms: 1_700_000_000_000,
            pre_checksum: 5,
            post_checksum: 6,
            index_offset: 200,
            flags: 0,
        };
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

    fn header(min_txid: u64, max_txid: u64, pre_checksum: u64) -> Header {
        Header { page_size: 4096, min_txid, max_txid, pre_checksum, post_checksum: 7, ..Header::default() }
    }

    /// A header must be what its object's name says: a longer snapshot
    /// copied over a shorter one, a level-1 segment over a level-0 one, a
    /// non-snapshot under a snapshot's name are refused; the same range
    /// under another level is the same change and passes.
    #[test]
    fn headers_are_checked_against_names() {
        let snap = |max| SegmentName { level: SNAPSHOT_LEVEL, min_txid: 1, max_txid: max };
        let l0 = SegmentName { level: 0, min_txid: 0x10, max_txid: 0x10 };
        assert!(snap(0x9).check_header(&header(1, 0x9, 0)).is_ok());
        assert!(l0.check_header(&header(0x10, 0x10, 5)).is_ok());
        assert!(matches!(snap(0x9).check_header(&header(1, 0x12, 0)), Err(FormatError::Misnamed(_))));
        assert!(matches!(l0.check_header(&header(0x10, 0x18, 5)), Err(FormatError::Misnamed(_))));
        assert!(matches!(l0.check_header(&header(0xf, 0x10, 5)), Err(FormatError::Misnamed(_))));
        assert!(matches!(snap(0x9).check_header(&header(1, 0x9, 5)), Err(FormatError::Misnamed(_))));
        let odd = SegmentName { level: SNAPSHOT_LEVEL, min_txid: 2, max_txid: 9 };
        assert!(matches!(odd.check_header(&header(2, 9, 0)), Err(FormatError::Misnamed(_))));
        assert!(SegmentName { level: 1, ..l0 }.check_header(&header(0x10, 0x10, 5)).is_ok());
        let err = anyhow::Error::from(snap(0x9).check_header(&header(1, 0x12, 0)).unwrap_err()).context("segment x");
        assert!(misnamed_in(&err));
        assert!(!misnamed_in(&anyhow::Error::from(FormatError::FileChecksum)));
    }
}
