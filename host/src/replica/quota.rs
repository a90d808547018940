//! A tenant's storage quota (`sandbox: storage-quota-mib`): what the
//! replica holds, from its listing, against what one more upload adds.
//!
//! The host enforces it, not the plugin: a tenant's plugin is not trusted
//! to count its own bytes. Only what sluice writes counts (segments; the
//! lease object is a few hundred bytes and is not listed). Past the quota
//! the replica stops uploading and says so; capture goes on into the
//! local spool, so raising the quota (and reloading) loses nothing.

use super::client::Listing;
use crate::segment::SegmentName;

/// Why an upload does not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    pub held: u64,
    pub quota: u64,
    pub size: u64,
}

/// Bytes the listed segments hold.
pub fn held(listing: &Listing) -> u64 {
    listing.values().map(|s| s.size).sum()
}

/// Whether uploading `size` bytes as `name` keeps the replica within
/// `quota` (an object of the same name is replaced, not added).
pub fn check(listing: &Listing, name: &SegmentName, size: u64, quota: u64) -> Result<(), Exceeded> {
    let replaced = listing.get(name).map_or(0, |s| s.size);
    let held = held(listing) - replaced;
    if held.saturating_add(size) > quota {
        return Err(Exceeded { held, quota, size });
    }
    Ok(())
}

/// Whether a compaction of `inputs` fits: its output is about the size of
/// its inputs, held beside them until retention deletes them.
pub fn compaction_fits(listing: &Listing, inputs: &Listing, quota: u64) -> bool {
    held(listing).saturating_add(held(inputs)) <= quota
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::RemoteSegment;

    fn name(min: u64, max: u64, level: u32) -> SegmentName {
        SegmentName { level, min_txid: min, max_txid: max }
    }

    fn listing(sizes: &[(SegmentName, u64)]) -> Listing {
        sizes
            .iter()
            .map(|(n, s)| (*n, RemoteSegment { size: *s, timestamp_ms: 0, modified_ms: None, parts: 0 }))
            .collect()
    }

    #[test]
    fn an_upload_fits_up_to_the_quota_and_not_one_byte_past_it() {
        let l = listing(&[(name(1, 1, 0), 600), (name(2, 2, 0), 300)]);
        assert_eq!(held(&l), 900);
        assert!(check(&l, &name(3, 3, 0), 100, 1000).is_ok());
        let err = check(&l, &name(3, 3, 0), 101, 1000).expect_err("one byte past");
        assert_eq!(err, Exceeded { held: 900, quota: 1000, size: 101 });
    }

    #[test]
    fn a_replaced_object_is_not_counted_twice() {
        let l = listing(&[(name(1, 1, 0), 600), (name(2, 2, 0), 300)]);
        assert!(check(&l, &name(2, 2, 0), 400, 1000).is_ok());
        assert!(check(&l, &name(2, 2, 0), 401, 1000).is_err());
    }

    #[test]
    fn a_compaction_fits_only_with_room_for_a_copy_of_its_inputs() {
        let (a, b) = (name(1, 1, 0), name(2, 2, 0));
        let l = listing(&[(a, 300), (b, 200), (name(3, 3, 0), 0)]);
        let inputs = listing(&[(a, 300), (b, 200)]);
        assert!(compaction_fits(&l, &inputs, 1000));
        assert!(!compaction_fits(&l, &inputs, 999));
    }
}
