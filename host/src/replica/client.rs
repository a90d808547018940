//! A replica's view of its store: segment listing, upload, download and
//! delete through the plugin, with the conventions the engine relies on
//! (only-if-absent writes, ranged downloads, batched deletes).

use super::error::ReplicaError;
use super::sealing;
use super::split;
use crate::capture::SpoolEntry;
use crate::clock::now_ms;
use crate::plugin::retry::retry;
use crate::plugin::{ByteRange, ObjectMeta, PluginStore, Precondition, SMALL_IO_BYTES, StorageError};
use crate::segment::format::HEADER_SIZE;
use crate::segment::reader::verify_bytes;
use crate::segment::sealed::PEEK_BYTES;
use crate::segment::{Header, SegmentName};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Ranged-read size for a restore's downloads: returning a list<u8> from
/// wasm costs about 1 ms per MiB, so a few MiB per call keeps calls (and a
/// network store's requests) few while memory stays low.
pub const DOWNLOAD_CHUNK: u64 = 8 << 20;
/// Ranged-read size for downloads inside the replicating process
/// (compaction inputs): each chunk is held by the plugin, by the host and
/// by the file write at once, and a compaction of a busy minute's level-0
/// segments of a few MB each peaked at three times the 8 MiB chunk's
/// worth; memory there is shared with every other database.
pub const REPLICATING_DOWNLOAD_CHUNK: u64 = 1 << 20;
/// Keys per listing page asked of the plugin.
const LIST_PAGE: u32 = 1000;

/// What the replica holds, keyed by segment name.
pub type Listing = BTreeMap<SegmentName, RemoteSegment>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSegment {
    pub size: u64,
    /// Milliseconds since the epoch of the segment's last transaction,
    /// taken from its upload time (0 if the store reports none).
    pub timestamp_ms: i64,
    pub modified_ms: Option<u64>,
    /// 0: one object at the segment's key; n: split into n part objects
    /// on a store without multipart upload (`split`).
    pub parts: u32,
}

/// List every segment in the replica.
pub async fn list(store: &PluginStore) -> Result<Listing, ReplicaError> {
    let started = std::time::Instant::now();
    let result = list_inner(store).await;
    observe(store, "list", 0, started, result.is_ok());
    result
}

async fn list_inner(store: &PluginStore) -> Result<Listing, ReplicaError> {
    let mut out = Listing::new();
    let mut split_parts = BTreeMap::<SegmentName, split::Seen>::new();
    for o in list_objects(store).await? {
        let Some(name) = SegmentName::parse(&o.key) else {
            if let Some((name, index, last)) = split::parse_part(&o.key) {
                split_parts.entry(name).or_default().add(&o, index, last);
            }
            continue;
        };
        // Segments carry no metadata: the upload time is within a sync
        // of the segment's own timestamp.
        let timestamp_ms = o.modified_ms.map_or(0, |m| m as i64);
        out.insert(name, RemoteSegment { size: o.size, timestamp_ms, modified_ms: o.modified_ms, parts: 0 });
    }
    split::merge(&mut out, split_parts);
    Ok(out)
}

/// Every object in the replica, segments or not (a Litestream backup's
/// files, for one), in the plugin's key order.
pub async fn list_objects(store: &PluginStore) -> Result<Vec<ObjectMeta>, ReplicaError> {
    // A listing moves names, not data: the warm small-io instance runs its
    // directory reads inline. On a new session each entry's read and stat
    // was a trip to the blocking pool, most of a small restore's time.
    let mut session = retry!(store.small_io_session())?;
    let out = list_all(&mut session, "").await?;
    store.recycle(session);
    Ok(out)
}

/// Every object under `prefix`, page by page, through `session`.
pub(super) async fn list_all(
    session: &mut crate::plugin::Instance,
    prefix: &str,
) -> Result<Vec<ObjectMeta>, crate::plugin::PluginError> {
    let (mut out, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let page = retry!(session.list(prefix, cursor.as_deref(), LIST_PAGE))?;
        out.extend(page.objects);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// Upload a spooled segment, only if absent. If it is already there with
/// the same content (our own earlier attempt that looked failed), that is
/// success; different content means a second writer. `timestamp_ms`
/// defaults to the segment header's.
///
/// Segments go up without object metadata: the header holds the
/// timestamp and the name the TXIDs, and on the file backend metadata is
/// a second file per segment (its creation cost a steady sync more than
/// the segment's own upload).
///
/// `bytes`, if given, is the segment itself (see `capture::Fresh`), saving
/// the read of its spooled copy.
pub async fn upload(
    store: &PluginStore,
    entry: &SpoolEntry,
    timestamp_ms: Option<i64>,
    bytes: Option<Arc<[u8]>>,
) -> Result<RemoteSegment, ReplicaError> {
    let started = std::time::Instant::now();
    let result = upload_inner(store, entry, timestamp_ms, bytes).await;
    observe(store, "put", entry.size, started, result.is_ok());
    result
}

/// Bytes of a spooled segment read ahead in one go: a level-0 segment is
/// usually smaller, so open, header, identity and body cost a single trip
/// to the blocking pool (each trip is two thread wake-ups). Larger ones
/// stream the rest, keeping a snapshot upload's memory at one part.
const PREFETCH: u64 = SMALL_IO_BYTES;
// A segment read whole is verified before it goes up, which is what lets
// capture skip syncing small ones.
const _: () = assert!(PREFETCH >= crate::capture::UNSYNCED_SPOOL_BYTES);

/// A spooled segment opened for upload.
struct Spooled {
    /// Positioned after `prefix`; `None` when `prefix` is all of it.
    file: Option<std::fs::File>,
    prefix: Prefix,
    len: u64,
    identity: String,
    timestamp_ms: Option<i64>,
    /// Why a segment read whole failed its check.
    damaged: Option<String>,
}

/// The start of a segment to upload: read from the spool, or handed over
/// by capture or compaction (`Fresh`), which is uploaded without a copy.
enum Prefix {
    Read(Vec<u8>),
    Given(Arc<[u8]>),
}

impl AsRef<[u8]> for Prefix {
    fn as_ref(&self) -> &[u8] {
        match self {
            Prefix::Read(v) => v,
            Prefix::Given(a) => a,
        }
    }
}

fn open_spooled(path: &Path) -> std::io::Result<Spooled> {
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut prefix = Vec::with_capacity(len.min(PREFETCH) as usize);
    (&mut file).take(PREFETCH).read_to_end(&mut prefix)?;
    if prefix.len() as u64 == len {
        return Ok(whole(Prefix::Read(prefix)));
    }
    let head = prefix
        .get(..HEADER_SIZE)
        .ok_or_else(|| std::io::Error::other(format!("{} is truncated ({len} bytes)", path.display())))?;
    let mut tail = [0u8; 16];
    file.read_exact_at(&mut tail, len - 16)?;
    let timestamp_ms = Header::decode(head).ok().map(|h| h.timestamp_ms);
    let identity = identity_of(head, &tail);
    Ok(Spooled { file: Some(file), prefix: Prefix::Read(prefix), len, identity, timestamp_ms, damaged: None })
}

/// A segment read whole, checked (a spooled one may have been damaged by
/// a power failure, being unsynced).
fn whole(bytes: Prefix) -> Spooled {
    let (timestamp_ms, damaged) = match verify_bytes(bytes.as_ref()) {
        Ok(h) => (Some(h.timestamp_ms), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let b = bytes.as_ref();
    let (head, tail) =
        (b.get(..HEADER_SIZE).unwrap_or_default(), b.get(b.len().saturating_sub(16)..).unwrap_or_default());
    let identity = identity_of(head, tail);
    Spooled { file: None, len: b.len() as u64, prefix: bytes, identity, timestamp_ms, damaged }
}

async fn upload_inner(
    store: &PluginStore,
    entry: &SpoolEntry,
    timestamp_ms: Option<i64>,
    bytes: Option<Arc<[u8]>>,
) -> Result<RemoteSegment, ReplicaError> {
    let key = entry.name.key();
    let spooled = read_spooled(store, entry, bytes).await?;
    let timestamp_ms = timestamp_ms.or(spooled.timestamp_ms).unwrap_or_else(now_ms);
    let (prefix, file, len, identity) = seal_if_keyed(store, &entry.path, spooled).await?;
    let precondition =
        if store.capabilities().conditional_writes { Precondition::IfAbsent } else { Precondition::None };
    // What was read ahead, then the rest of the file (if any), cut at the
    // length we saw so the end needs no further read.
    let rest: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>> = match file {
        Some(file) => Box::pin(tokio::fs::File::from_std(file)),
        None => Box::pin(tokio::io::empty()),
    };
    let body = std::io::Cursor::new(prefix).chain(rest).take(len);
    let mut session = if len <= SMALL_IO_BYTES { retry!(store.small_io_session())? } else { retry!(store.session())? };
    let put = if split::needed(store.capabilities(), len) {
        split::upload(store, &mut session, &key, body, len, precondition).await?
    } else {
        match store.put_stream(&mut session, &key, body, Vec::new(), precondition).await {
            Ok(meta) => split::Put::Done(meta, 0),
            Err(e) if matches!(e.storage(), Some(StorageError::PreconditionFailed(_))) => {
                split::Put::Exists { parts: 0 }
            }
            Err(e) => return Err(e.into()),
        }
    };
    match put {
        split::Put::Done(meta, parts) => {
            store.recycle(session);
            // A store that does not say when serves our clock: retention
            // ages segments from their upload.
            let modified_ms = meta.modified_ms.or_else(|| u64::try_from(now_ms()).ok());
            Ok(RemoteSegment { size: meta.size, timestamp_ms, modified_ms, parts })
        }
        split::Put::Exists { parts } => match already_there(store, &key, parts, len, &identity).await? {
            Some((size, modified_ms)) => Ok(RemoteSegment { size, timestamp_ms, modified_ms, parts }),
            None => Err(ReplicaError::Conflict { replica: store.labels().replica.clone(), key }),
        },
        split::Put::Raced => Err(ReplicaError::Conflict { replica: store.labels().replica.clone(), key }),
    }
}

/// The segment to upload, from `bytes` if given, else read from the
/// spool; refused if damaged.
async fn read_spooled(
    store: &PluginStore,
    entry: &SpoolEntry,
    bytes: Option<Arc<[u8]>>,
) -> Result<Spooled, ReplicaError> {
    let path = entry.path.clone();
    let mut spooled = match bytes {
        Some(bytes) => whole(Prefix::Given(bytes)),
        None => tokio::task::spawn_blocking(move || open_spooled(&path))
            .await
            .map_err(|e| bug(store, format!("reading {} failed: {e}", entry.path.display())))?
            .map_err(|e| local(store, format!("cannot read spooled {}", entry.path.display()), e))?,
    };
    if let Some(msg) = spooled.damaged.take() {
        return Err(ReplicaError::DamagedSpool {
            replica: store.labels().replica.clone(),
            path: entry.path.display().to_string(),
            msg,
        });
    }
    Ok(spooled)
}

/// What goes up (bytes read ahead, the rest of the file if any, the
/// length) and what identifies it: the segment as it is, or sealed for an
/// encrypted replica.
async fn seal_if_keyed(
    store: &PluginStore,
    path: &std::path::Path,
    spooled: Spooled,
) -> Result<(Prefix, Option<std::fs::File>, u64, Identity), ReplicaError> {
    let Spooled { file, prefix, len, identity: digest, .. } = spooled;
    Ok(match store.keys() {
        None => (prefix, file, len, Identity::Plain(digest)),
        Some(keys) if file.is_none() => {
            let (sealed, header) = sealing::seal_bytes(store, keys, prefix.as_ref())?;
            let len = sealed.len() as u64;
            (Prefix::Read(sealed), None, len, Identity::Sealed(header))
        }
        Some(keys) => {
            drop(file);
            let (file, len, header) = sealing::seal_file(store, keys, path).await?;
            (Prefix::Read(Vec::new()), Some(file), len, Identity::Sealed(header))
        }
    })
}

/// What identifies a segment being uploaded, to recognise our own earlier
/// attempt in the store.
enum Identity {
    /// `identity_of` its header and trailer.
    Plain(String),
    /// Its plaintext header (which carries its own hash, the TXIDs and the
    /// database checksums): sealing is randomised, so the ciphertext of a
    /// retried upload differs from the first attempt's.
    Sealed(Header),
}

/// After an only-if-absent write was refused: is the object there (held
/// in `parts` parts, 0 for one object) ours from an earlier attempt
/// (Some(size, modified)), or another writer's? Compared by the object's
/// own header and trailer (metadata may be missing if the earlier attempt
/// died half-way), or for a sealed one by the plaintext header inside.
async fn already_there(
    store: &PluginStore,
    key: &str,
    parts: u32,
    len: u64,
    identity: &Identity,
) -> Result<Option<(u64, Option<u64>)>, ReplicaError> {
    let keys = split::held_in(key, parts);
    let mut s = retry!(store.session())?;
    let mut sizes = Vec::with_capacity(keys.len());
    let mut modified_ms = None;
    for k in &keys {
        let meta = retry!(s.head(k))?;
        sizes.push(meta.size);
        modified_ms = meta.modified_ms;
    }
    let size = sizes.iter().sum::<u64>();
    let same = match identity {
        Identity::Plain(digest) => {
            let head = read_end(store, &mut s, &keys, &sizes, HEADER_SIZE as u64, End::Front).await?;
            let tail = read_end(store, &mut s, &keys, &sizes, 16, End::Back).await?;
            size == len && identity_of(&head, &tail) == *digest
        }
        Identity::Sealed(header) => {
            let start = read_end(store, &mut s, &keys, &sizes, PEEK_BYTES, End::Front).await?;
            // Anything that does not open with our keys is not ours.
            sealing::peek(store, key, &start).is_ok_and(|h| h == *header)
        }
    };
    store.recycle(s);
    Ok(same.then_some((size, modified_ms)))
}

enum End {
    Front,
    Back,
}

/// The first or last `n` bytes of the concatenation of `keys` (of
/// `sizes`): a split segment's header or trailer may span parts.
async fn read_end(
    store: &PluginStore,
    s: &mut crate::plugin::Instance,
    keys: &[String],
    sizes: &[u64],
    n: u64,
    end: End,
) -> Result<Vec<u8>, ReplicaError> {
    let (mut out, mut need) = (Vec::new(), n);
    let mut held: Vec<(&String, &u64)> = keys.iter().zip(sizes).collect();
    if matches!(end, End::Back) {
        held.reverse();
    }
    for (k, &size) in held {
        if need == 0 {
            break;
        }
        let take = need.min(size);
        let offset = if matches!(end, End::Back) { size - take } else { 0 };
        let got = retry!(s.get(k, Some(ByteRange { offset, length: take })))?;
        if got.len() as u64 != take {
            // Changed since its head: what was read would be misplaced.
            return Err(ReplicaError::Store {
                replica: store.labels().replica.clone(),
                msg: format!("{k}: {} bytes read where its size promised {take} (changed by someone else?)", got.len()),
            });
        }
        need -= take;
        match end {
            End::Front => out.extend_from_slice(&got),
            End::Back => drop(out.splice(0..0, got)),
        }
    }
    Ok(out)
}

/// Download a segment into `dest` with ranged reads. `size`, the size
/// the listing gave, picks the session: a small segment is fetched through
/// the warm small-io instance, so a compaction of many level-0 segments
/// (or a restore of them) does not instantiate the plugin for each.
/// Larger ones are read `chunk` bytes per call.
pub async fn download(
    store: &PluginStore,
    name: &SegmentName,
    remote: &RemoteSegment,
    dest: &Path,
    chunk: u64,
) -> Result<u64, ReplicaError> {
    let key = name.key();
    let keys = split::held_in(&key, remote.parts);
    let started = std::time::Instant::now();
    let result = download_inner(store, &key, &keys, remote.size, dest, chunk).await;
    observe(store, "get", *result.as_ref().unwrap_or(&0), started, result.is_ok());
    result
}

/// [`download`] by key: any object of the replica, a segment or not.
pub async fn download_key(
    store: &PluginStore,
    key: &str,
    size: u64,
    dest: &Path,
    chunk: u64,
) -> Result<u64, ReplicaError> {
    let started = std::time::Instant::now();
    let result = download_inner(store, key, &[key.to_string()], size, dest, chunk).await;
    observe(store, "get", *result.as_ref().unwrap_or(&0), started, result.is_ok());
    result
}

/// Download the object `key`, held in `parts` (itself, or its split
/// parts in order), into `dest`.
async fn download_inner(
    store: &PluginStore,
    key: &str,
    parts: &[String],
    size: u64,
    dest: &Path,
    chunk: u64,
) -> Result<u64, ReplicaError> {
    let small = size <= SMALL_IO_BYTES;
    let mut session = if small { retry!(store.small_io_session())? } else { retry!(store.session())? };
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(|e| local(store, format!("cannot create {}", dest.display()), e))?;
    let ranged = store.capabilities().ranged_reads;
    let mut total = 0u64;
    for part in parts {
        let mut offset = 0u64;
        loop {
            let length = if small { SMALL_IO_BYTES } else { chunk.max(1) };
            let range = ranged.then_some(ByteRange { offset, length });
            let chunk = retry!(session.get(part, range))?;
            file.write_all(&chunk).await.map_err(|e| local(store, format!("cannot write {}", dest.display()), e))?;
            offset += chunk.len() as u64;
            if !ranged || (chunk.len() as u64) < length {
                break;
            }
        }
        total += offset;
    }
    // Not synced: `dest` is scratch (a restore's or a compaction's), read
    // back at once and deleted; after a crash the work is redone anyway.
    file.flush().await.map_err(|e| local(store, format!("cannot write {}", dest.display()), e))?;
    drop(file);
    store.recycle(session);
    sealing::open_file(store, key, dest).await?;
    Ok(total)
}

/// Fetch a small segment (at most `SMALL_IO_BYTES`, as the listing
/// gave its `size`) whole into memory through the warm small-io instance:
/// one plugin call, no scratch file. A length other than the listing's
/// means the object changed under us, which is refused.
pub async fn fetch(store: &PluginStore, name: &SegmentName, remote: &RemoteSegment) -> Result<Vec<u8>, ReplicaError> {
    let started = std::time::Instant::now();
    let result = fetch_inner(store, name, remote).await;
    observe(store, "get", result.as_ref().map_or(0, |b| b.len() as u64), started, result.is_ok());
    result
}

/// The largest segment `fetch` takes: it goes through the small-io
/// session, one call, one copy in memory; larger ones are `download`ed.
pub const MAX_FETCH_BYTES: u64 = SMALL_IO_BYTES;

async fn fetch_inner(store: &PluginStore, name: &SegmentName, remote: &RemoteSegment) -> Result<Vec<u8>, ReplicaError> {
    let size = remote.size;
    if size > MAX_FETCH_BYTES {
        return Err(bug(store, format!("{name} is {size} bytes, too large to fetch into memory")));
    }
    let key = name.key();
    let keys = split::held_in(&key, remote.parts);
    let mut session = retry!(store.small_io_session())?;
    let mut bytes = Vec::new();
    for part in &keys {
        // One byte more than expected, so a grown object shows as such.
        let want = size.saturating_sub(bytes.len() as u64) + 1;
        let range = store.capabilities().ranged_reads.then_some(ByteRange { offset: 0, length: want });
        bytes.extend(retry!(session.get(part, range))?);
    }
    store.recycle(session);
    if bytes.len() as u64 != size {
        return Err(ReplicaError::Store {
            replica: store.labels().replica.clone(),
            msg: format!("{key} is {} bytes, the listing said {size} (changed by someone else?)", bytes.len()),
        });
    }
    sealing::open_bytes(store, &key, bytes)
}

/// The objects holding segments of `listing`: a split one's parts too.
pub fn keys_of(names: &[SegmentName], listing: &Listing) -> Vec<String> {
    let held = |n: &SegmentName| listing.get(n).map_or_else(|| vec![n.key()], |remote| split::keys_of(n, remote));
    names.iter().flat_map(held).collect()
}

/// Delete objects (segments' `keys_of`) in batches the plugin accepts.
pub async fn delete(store: &PluginStore, keys: &[String]) -> Result<(), ReplicaError> {
    let started = std::time::Instant::now();
    let result = delete_inner(store, keys).await;
    observe(store, "delete", 0, started, result.is_ok());
    result
}

async fn delete_inner(store: &PluginStore, keys: &[String]) -> Result<(), ReplicaError> {
    if keys.is_empty() {
        return Ok(());
    }
    let batch = store.capabilities().max_delete_batch.max(1) as usize;
    // Deletes move no data: the warm small-io instance takes them, which
    // spares retention an instantiation after every compaction.
    let mut session = retry!(store.small_io_session())?;
    for chunk in keys.chunks(batch) {
        let failures = retry!(session.delete(chunk))?;
        if let Some(f) = failures.first() {
            return Err(ReplicaError::Store {
                replica: store.labels().replica.clone(),
                msg: format!("could not delete {} ({} failures): {:?}", f.key, failures.len(), f.error),
            });
        }
    }
    store.recycle(session);
    Ok(())
}

fn observe(store: &PluginStore, op: &str, bytes: u64, started: std::time::Instant, ok: bool) {
    let l = store.labels();
    crate::metrics::replica_op(&l.database, &l.replica, &l.plugin, op, bytes, started.elapsed().as_secs_f64(), ok);
}

fn local(store: &PluginStore, what: String, source: std::io::Error) -> ReplicaError {
    ReplicaError::Local { replica: store.labels().replica.clone(), what, source }
}

fn bug(store: &PluginStore, msg: String) -> ReplicaError {
    ReplicaError::Bug { replica: store.labels().replica.clone(), msg }
}

/// A segment's identity without reading it all: its header (which carries
/// its own hash) and trailer (the hash of everything else).
fn identity_of(head: &[u8], tail: &[u8]) -> String {
    let mut ends = Vec::with_capacity(head.len() + tail.len());
    ends.extend_from_slice(head);
    ends.extend_from_slice(tail);
    format!("{:016x}", crate::checksum::bytes_hash(&ends))
}
