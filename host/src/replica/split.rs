//! Segments larger than a store takes in one object, on a store without
//! multipart upload (DESIGN 35): stored as numbered part objects beside
//! the segment's key, the final one marked, so any plugin can hold a
//! snapshot of any size. `client` lists a complete set as one segment and
//! reads it back through here; an incomplete set (an upload cut short) is
//! not a segment at all.
//!
//! Layout (FORMAT.md, "Split segments"): the segment at `key` becomes
//! `key.part-000001`, `key.part-000002`, … and `key.part-00000N-last`,
//! each at most `part_bytes` long, concatenated in order.

use super::client::{Listing, RemoteSegment};
use crate::plugin::retry::retry;
use crate::plugin::{
    Capabilities, Instance, ObjectMeta, PluginError, PluginStore, Precondition, StorageError, largest_single_put,
};
use crate::segment::SegmentName;
use std::collections::BTreeMap;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Size of every part but the last: a 1 GiB snapshot is 64 objects, and
/// one part is what the host (and the plugin) hold in memory at a time,
/// against the whole object a single put of up to the plugin's limit
/// (64-128 MiB) would hold.
pub const SPLIT_PART_BYTES: u64 = 16 << 20;
/// Digits of a part number in its key: fixed, so keys sort in order.
const INDEX_DIGITS: usize = 6;
/// Most parts of one segment (what six digits can number).
const MAX_SPLIT_PARTS: u64 = 999_999;
const PART_MARK: &str = ".part-";
const LAST_MARK: &str = "-last";

/// Whether an object of `len` bytes must be split on this store.
pub fn needed(caps: &Capabilities, len: u64) -> bool {
    !caps.multipart_upload && len > largest_single_put(caps).max(1)
}

/// The size of each part (but the last) on this store.
pub fn part_bytes(caps: &Capabilities) -> u64 {
    SPLIT_PART_BYTES.min(caps.max_put_size).max(1)
}

/// How many parts of `part` bytes hold `len` bytes (at least one).
pub fn part_count(len: u64, part: u64) -> u64 {
    len.div_ceil(part.max(1)).max(1)
}

/// Part `index` (from 1) of the segment at `key`.
pub fn part_key(key: &str, index: u32, last: bool) -> String {
    let mark = if last { LAST_MARK } else { "" };
    format!("{key}{PART_MARK}{index:0width$}{mark}", width = INDEX_DIGITS)
}

/// Every part key of a segment split in `parts`, in order.
pub fn part_keys(key: &str, parts: u32) -> Vec<String> {
    (1..=parts).map(|i| part_key(key, i, i == parts)).collect()
}

/// The objects holding the segment at `key` in `parts` parts (0: the
/// key itself), in reading order.
pub fn held_in(key: &str, parts: u32) -> Vec<String> {
    if parts == 0 { vec![key.to_string()] } else { part_keys(key, parts) }
}

/// The keys that hold a listed segment, for a delete: its parts with the
/// final one first, so that a delete cut short leaves an incomplete set
/// (never listed) rather than a complete-looking one with a gap.
pub fn keys_of(name: &SegmentName, remote: &RemoteSegment) -> Vec<String> {
    let mut keys = held_in(&name.key(), remote.parts);
    keys.rotate_right(1);
    keys
}

/// A part key's segment, part number and whether it is the final part.
pub fn parse_part(key: &str) -> Option<(SegmentName, u32, bool)> {
    let (base, rest) = key.rsplit_once(PART_MARK)?;
    let (digits, last) = match rest.strip_suffix(LAST_MARK) {
        Some(d) => (d, true),
        None => (rest, false),
    };
    if digits.len() != INDEX_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let index = digits.parse::<u32>().ok().filter(|&i| i >= 1)?;
    Some((SegmentName::parse(base)?, index, last))
}

/// The parts of one segment seen in a listing. Final parts are kept apart
/// from the others: an upload cut short under another part count (a
/// changed put limit) can leave a plain part numbered like this set's
/// final one.
#[derive(Debug, Default)]
pub struct Seen {
    /// Parts but final ones: size by number.
    middle: BTreeMap<u32, u64>,
    /// Final parts: (size, time) by number. The final part goes up last,
    /// so its time is the segment's.
    finals: BTreeMap<u32, (u64, Option<u64>)>,
}

impl Seen {
    pub fn add(&mut self, meta: &ObjectMeta, index: u32, last: bool) {
        if last {
            self.finals.insert(index, (meta.size, meta.modified_ms));
        } else {
            self.middle.insert(index, meta.size);
        }
    }

    /// The numbers of the final parts seen.
    pub fn finals(&self) -> impl Iterator<Item = u32> + '_ {
        self.finals.keys().copied()
    }

    /// The segment, if a set is complete: a final part numbered N and
    /// plain parts 1 to N-1 (plain parts numbered past N are another
    /// attempt's leftovers). Of two complete sets (only two writers could
    /// make them, and each is checked whole on reading), the later.
    pub fn complete(&self) -> Option<RemoteSegment> {
        let complete = |(n, _): &(&u32, &(u64, Option<u64>))| (1..**n).all(|i| self.middle.contains_key(&i));
        let (&last, &(final_size, modified_ms)) =
            self.finals.iter().filter(complete).max_by_key(|(n, (_, modified))| (*modified, **n))?;
        Some(RemoteSegment {
            size: self.middle.range(1..last).map(|(_, size)| size).sum::<u64>() + final_size,
            timestamp_ms: modified_ms.map_or(0, |m| m as i64),
            modified_ms,
            parts: last,
        })
    }
}

/// Add the complete sets among `seen` to `listing`; a segment also held
/// whole keeps its whole object.
pub fn merge(listing: &mut Listing, seen: BTreeMap<SegmentName, Seen>) {
    for (name, parts) in seen {
        if let Some(segment) = parts.complete() {
            listing.entry(name).or_insert(segment);
        }
    }
}

/// What a split upload found.
pub enum Put {
    /// It went up: its metadata (the final part's, with the whole
    /// size) and how many parts hold it (0: one object).
    Done(ObjectMeta, u32),
    /// With `IfAbsent`: the segment was already there (held in `parts`
    /// parts, 0 for one object), and nothing was written; the caller
    /// decides whether it is ours.
    Exists { parts: u32 },
    /// With `IfAbsent`: another writer completed the segment while this
    /// one wrote its parts (which may have overwritten some of its): a
    /// second writer, never to be taken for our own earlier attempt.
    Raced,
}

/// Upload `len` bytes of `body` as the parts of the segment at `key`.
/// A segment already there (whole, or a complete set of any part count)
/// is looked for first: with `IfAbsent` it is left alone (`Exists`);
/// with `None` (a store without conditional writes) it is unlisted
/// first, its whole object and every final part deleted, so that
/// overwriting parts never leaves a complete-looking mix of two uploads.
/// Parts then go up in order, earlier ones overwriting what an upload cut
/// short left, and the final part, which completes the set, last (only
/// if absent, with `IfAbsent`).
pub async fn upload(
    store: &PluginStore,
    session: &mut Instance,
    key: &str,
    mut body: impl AsyncRead + Unpin,
    len: u64,
    precondition: Precondition,
) -> Result<Put, PluginError> {
    let part = part_bytes(store.capabilities());
    let count = part_count(len, part);
    if count > MAX_SPLIT_PARTS {
        return Err(too_many(store, key, len, part));
    }
    let count = count as u32;
    let found = existing(session, key).await?;
    match (found.segment(), &precondition) {
        (Some(parts), Precondition::IfAbsent) => return Ok(Put::Exists { parts }),
        (_, Precondition::IfAbsent) => {}
        _ => unlist(store, session, key, &found, count).await?,
    }
    let mut remaining = len;
    for index in 1..=count {
        let this = remaining.min(part);
        let mut bytes = Vec::with_capacity(this as usize);
        (&mut body).take(this).read_to_end(&mut bytes).await.map_err(|e| read_failed(store, key, e))?;
        if bytes.len() as u64 != this {
            return Err(read_failed(store, key, std::io::ErrorKind::UnexpectedEof.into()));
        }
        remaining -= this;
        let last = index == count;
        let condition = if last { precondition.clone() } else { Precondition::None };
        let part_key = part_key(key, index, last);
        match store.put_stream(session, &part_key, &bytes[..], Vec::new(), condition).await {
            Ok(meta) if last => return Ok(Put::Done(ObjectMeta { size: len, ..meta }, count)),
            Ok(_) => {}
            Err(e) if last && matches!(e.storage(), Some(StorageError::PreconditionFailed(_))) => {
                // Our own put, landed on an attempt whose answer was lost
                // (`retry!` sent it again), or another writer's.
                return match final_part_is(session, &part_key, &bytes).await? {
                    Some(meta) => Ok(Put::Done(ObjectMeta { size: len, ..meta }, count)),
                    None => Ok(Put::Raced),
                };
            }
            Err(e) => return Err(e),
        }
    }
    Err(read_failed(store, key, std::io::Error::other("no parts were written")))
}

/// What the store holds under a segment's key and parts.
struct Found {
    whole: bool,
    parts: Seen,
}

impl Found {
    /// The segment as `Put::Exists` names it: 0 whole, n a complete set.
    fn segment(&self) -> Option<u32> {
        if self.whole { Some(0) } else { self.parts.complete().map(|s| s.parts) }
    }
}

/// The segment at `key` as the store holds it now: its whole object, and
/// every part a listing of its parts shows.
async fn existing(session: &mut Instance, key: &str) -> Result<Found, PluginError> {
    let whole = match retry!(session.head(key)) {
        Ok(_) => true,
        Err(e) if matches!(e.storage(), Some(StorageError::NotFound(_))) => false,
        Err(e) => return Err(e),
    };
    let mut parts = Seen::default();
    for o in &super::client::list_all(session, &format!("{key}{PART_MARK}")).await? {
        if let Some((_, index, last)) = parse_part(&o.key) {
            parts.add(o, index, last);
        }
    }
    Ok(Found { whole, parts })
}

/// Make the segment at `key` unlisted before its parts are overwritten:
/// delete its whole object and every final part, this upload's own final
/// part (`count`) too, in case a lagging listing missed it.
async fn unlist(
    store: &PluginStore,
    session: &mut Instance,
    key: &str,
    found: &Found,
    count: u32,
) -> Result<(), PluginError> {
    let mut doomed: Vec<String> = found.parts.finals().map(|n| part_key(key, n, true)).collect();
    doomed.push(part_key(key, count, true));
    if found.whole {
        doomed.push(key.to_string());
    }
    doomed.sort();
    doomed.dedup();
    let batch = store.capabilities().max_delete_batch.max(1) as usize;
    for chunk in doomed.chunks(batch) {
        let failures = retry!(session.delete(chunk))?;
        if let Some(f) = failures.into_iter().next() {
            let kind = StorageError::from(f.error).into();
            return Err(PluginError { labels: store.labels().clone(), op: format!("delete {}", f.key), kind });
        }
    }
    Ok(())
}

/// The final part's metadata if what the store holds under `part_key`
/// is `bytes`.
async fn final_part_is(
    session: &mut Instance,
    part_key: &str,
    bytes: &[u8],
) -> Result<Option<ObjectMeta>, PluginError> {
    let meta = retry!(session.head(part_key))?;
    if meta.size != bytes.len() as u64 {
        return Ok(None);
    }
    let held = retry!(session.get(part_key, None))?;
    Ok((held == bytes).then_some(meta))
}

fn read_failed(store: &PluginStore, key: &str, e: std::io::Error) -> PluginError {
    PluginError {
        labels: store.labels().clone(),
        op: format!("upload {key} in parts"),
        kind: StorageError::Permanent(format!("reading the segment to upload failed: {e}")).into(),
    }
}

fn too_many(store: &PluginStore, key: &str, len: u64, part: u64) -> PluginError {
    PluginError {
        labels: store.labels().clone(),
        op: format!("upload {key} in parts"),
        kind: StorageError::Unsupported(format!(
            "{len} bytes would take more than {MAX_SPLIT_PARTS} parts of {part} bytes; replicate to a store with multipart uploads"
        ))
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> SegmentName {
        SegmentName { level: 9, min_txid: 1, max_txid: 0x2a }
    }

    fn meta(key: &str, size: u64, modified: u64) -> ObjectMeta {
        ObjectMeta { key: key.into(), size, etag: "e".into(), modified_ms: Some(modified), metadata: vec![] }
    }

    #[test]
    fn part_keys_parse_back_and_are_never_segments() {
        let key = name().key();
        let keys = part_keys(&key, 3);
        assert_eq!(keys[0], format!("{key}.part-000001"));
        assert_eq!(keys[2], format!("{key}.part-000003-last"));
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(parse_part(k), Some((name(), i as u32 + 1, i == 2)));
            assert_eq!(SegmentName::parse(k), None, "{k}");
        }
        for bad in [&key, &format!("{key}.part-1"), &format!("{key}.part-000000"), &format!("{key}.part-00000x")] {
            assert_eq!(parse_part(bad), None, "{bad}");
        }
        assert_eq!(parse_part("junk.part-000001"), None);
    }

    #[test]
    fn only_a_set_without_gaps_up_to_its_final_part_is_a_segment() {
        let key = name().key();
        let set = |parts: &[(u32, bool)]| {
            let mut seen = Seen::default();
            for &(i, last) in parts {
                seen.add(&meta(&part_key(&key, i, last), 10 + u64::from(i), 1000 + u64::from(i)), i, last);
            }
            seen.complete()
        };
        let whole = set(&[(1, false), (2, false), (3, true)]).expect("complete");
        assert_eq!((whole.size, whole.parts, whole.modified_ms, whole.timestamp_ms), (36, 3, Some(1003), 1003));
        assert!(set(&[(1, false), (2, false)]).is_none(), "no final part: cut short");
        assert!(set(&[(1, false), (3, true)]).is_none(), "a gap");
        assert!(set(&[(2, false), (3, true)]).is_none(), "the first part missing");
        assert_eq!(set(&[(1, true)]).map(|s| s.parts), Some(1));
        // Leftovers of an attempt with more parts, cut short: plain parts
        // numbered at and past this set's final one do not hide it.
        let with_leftovers = set(&[(1, false), (2, true), (2, false), (3, false), (4, false)]).expect("complete");
        assert_eq!((with_leftovers.parts, with_leftovers.size), (2, 11 + 12));
        // Two complete sets (two writers): the later final part's.
        let two = set(&[(1, false), (2, false), (2, true), (3, true)]).expect("complete");
        assert_eq!((two.parts, two.modified_ms), (3, Some(1003)));
    }

    #[test]
    fn a_whole_object_wins_over_parts_of_the_same_segment() {
        let whole = RemoteSegment { size: 5, timestamp_ms: 1, modified_ms: None, parts: 0 };
        let mut listing = Listing::from([(name(), whole.clone())]);
        let mut seen = Seen::default();
        seen.add(&meta("x", 7, 2), 1, true);
        merge(&mut listing, BTreeMap::from([(name(), seen)]));
        assert_eq!(listing[&name()], whole);
    }

    #[test]
    fn deletes_take_the_final_part_first() {
        let key = name().key();
        let split = RemoteSegment { size: 5, timestamp_ms: 1, modified_ms: None, parts: 3 };
        let keys = keys_of(&name(), &split);
        assert_eq!(keys, [part_key(&key, 3, true), part_key(&key, 1, false), part_key(&key, 2, false)]);
        assert_eq!(keys_of(&name(), &RemoteSegment { parts: 0, ..split }), [key]);
    }

    #[test]
    fn only_objects_past_a_single_put_without_multipart_are_split() {
        let caps = Capabilities {
            conditional_writes: true,
            ranged_reads: true,
            multipart_upload: false,
            max_object_size: Some(64 << 20),
            max_put_size: 64 << 20,
            min_part_size: 0,
            max_part_size: 0,
            max_parts: 0,
            max_delete_batch: 1000,
            max_list_page: 1000,
        };
        assert!(!needed(&caps, 64 << 20));
        assert!(needed(&caps, (64 << 20) + 1));
        assert!(!needed(&Capabilities { multipart_upload: true, ..caps }, 1 << 40));
        assert_eq!(part_bytes(&caps), SPLIT_PART_BYTES);
        assert_eq!(part_bytes(&Capabilities { max_put_size: 1 << 20, ..caps }), 1 << 20);
        assert_eq!((part_count(0, 10), part_count(10, 10), part_count(11, 10)), (1, 1, 2));
    }
}
