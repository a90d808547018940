//! Checksums of pages and of whole databases.
//!
//! A database's checksum is the XOR of a 64-bit hash of every page, seeded
//! with its page number. XOR makes it updatable page by page (remove the
//! old page's hash, add the new one's), so each segment can carry the
//! checksum of the whole database after it without rereading everything,
//! and a restore can verify itself after every segment.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Hash of one page at `pgno`.
pub fn page_hash(pgno: u32, page: &[u8]) -> u64 {
    xxh3_64_with_seed(page, pgno as u64)
}

/// The page SQLite never writes: the one holding the lock byte at 1 GiB.
/// Its content is undefined (a hole in the file), so it never counts.
pub fn lock_page(page_size: u32) -> u32 {
    (0x4000_0000 / page_size as u64) as u32 + 1
}

/// Per-page hashes of a database, and their XOR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageHashes {
    hashes: Vec<u64>,
    total: u64,
    lock_page: u32,
}

impl PageHashes {
    /// Hashes of an empty database with pages of `page_size` bytes. Pages
    /// hash as 0 until set.
    pub fn new(page_size: u32) -> Self {
        PageHashes { hashes: Vec::new(), total: 0, lock_page: lock_page(page_size) }
    }

    /// The database checksum.
    pub fn checksum(&self) -> u64 {
        self.total
    }

    /// Number of pages.
    pub fn pages(&self) -> u32 {
        self.hashes.len() as u32
    }

    /// Set page `pgno` (1-based) to `hash`, growing the database if needed.
    pub fn set(&mut self, pgno: u32, hash: u64) {
        let hash = if pgno == self.lock_page { 0 } else { hash };
        let i = pgno as usize - 1;
        if self.hashes.len() <= i {
            self.hashes.resize(i + 1, 0);
        }
        self.total ^= self.hashes[i] ^ hash;
        self.hashes[i] = hash;
    }

    /// Shrink or grow to `pages` pages; pages cut off leave the checksum.
    /// Pages added by growth without being set hash as 0 until set.
    pub fn resize(&mut self, pages: u32) {
        for h in self.hashes.iter().skip(pages as usize) {
            self.total ^= h;
        }
        self.hashes.resize(pages as usize, 0);
    }

    /// The raw hashes, for persisting.
    pub fn as_slice(&self) -> &[u64] {
        &self.hashes
    }

    /// Rebuild from persisted hashes.
    pub fn from_vec(page_size: u32, hashes: Vec<u64>) -> Self {
        let total = hashes.iter().fold(0, |a, h| a ^ h);
        PageHashes { hashes, total, lock_page: lock_page(page_size) }
    }
}

/// Checksum of an arbitrary byte string (segment files, headers).
pub fn bytes_hash(data: &[u8]) -> u64 {
    xxh3_64_with_seed(data, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_equals_from_scratch() {
        let pages: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 512]).collect();
        let mut inc = PageHashes::new(512);
        for (i, p) in pages.iter().enumerate() {
            inc.set(i as u32 + 1, page_hash(i as u32 + 1, p));
        }
        inc.set(3, page_hash(3, &[9; 512]));
        inc.resize(7);
        let scratch = PageHashes::from_vec(
            512,
            (1..=7u32)
                .map(|p| if p == 3 { page_hash(3, &[9; 512]) } else { page_hash(p, &pages[p as usize - 1]) })
                .collect(),
        );
        assert_eq!(inc.checksum(), scratch.checksum());
        assert_ne!(page_hash(1, &[0; 512]), page_hash(2, &[0; 512]));
    }
}
