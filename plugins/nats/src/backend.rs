//! The store's operations on a JetStream object store (see the crate docs).

use crate::bucket::{Bucket, Current, ensure_stream, stream_exists};
use crate::client::Client;
use crate::location::{Location, settings};
use crate::object::{self, FIRST_CHUNK_HEADER, MetaOptions, ObjectInfo, chunk_subject, nuid};
use crate::{CHUNK_SIZE, MAX_BATCH, MAX_PUT_SIZE};
use sluice_sdk::*;
use std::cell::{Cell, RefCell};
use std::time::{SystemTime, UNIX_EPOCH};

struct Nats {
    at: Location,
    /// Opened on the first call, kept for the instance's short life, and
    /// dropped after an I/O failure so the next call connects afresh.
    conn: RefCell<Option<Client>>,
    /// The bucket is known to exist. It is created by the first write,
    /// never by a read: a restore from a misspelt bucket must not leave
    /// an empty one behind.
    bucket_ready: Cell<bool>,
}

/// What a call needs of the bucket.
#[derive(Clone, Copy, PartialEq)]
enum Need {
    /// A write: create the bucket if it is missing.
    Create,
    /// A read: a missing bucket is an empty one.
    Existing,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The sequence a conditional meta publish expects as the subject's last
/// (0: none), or `None` for an unconditional one. A precondition already
/// lost fails here, before any chunk is written; JetStream checks it again,
/// atomically, when the meta record is published.
fn expected_sequence(key: &str, precondition: &Precondition, existing: Option<&Current>) -> Result<Option<u64>, Error> {
    let lost = |why: &str| Err(Error::precondition_failed(format!("{key}: {why}")));
    match precondition {
        Precondition::None => Ok(None),
        Precondition::IfAbsent => match existing {
            Some(c) if !c.info.deleted => lost("exists (if-absent)"),
            // A deleted object leaves its deletion record: expect that one.
            Some(c) => Ok(Some(c.seq)),
            None => Ok(Some(0)),
        },
        Precondition::IfMatch(etag) => match (existing, etag.parse::<u64>()) {
            (Some(c), Ok(seq)) if !c.info.deleted && c.seq == seq => Ok(Some(seq)),
            (Some(c), _) if !c.info.deleted => lost(&format!("etag is {}, not {etag} (if-match)", c.seq)),
            _ => lost("does not exist (if-match)"),
        },
    }
}

fn object_meta(key: &str, cur: &Current) -> ObjectMeta {
    let mut meta = ObjectMeta::new(key, cur.info.size, cur.seq.to_string());
    meta.modified_ms = cur.modified_ms;
    meta.metadata = cur.info.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    meta
}

impl Nats {
    /// Run `f` on the connection, connecting first if needed; with
    /// `Need::Create` the bucket is created if missing, with
    /// `Need::Existing` a missing bucket answers `missing()` instead.
    fn call<T>(
        &self,
        need: Need,
        missing: impl FnOnce() -> Result<T, Error>,
        f: impl FnOnce(&mut Bucket) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut slot = self.conn.borrow_mut();
        let client = match slot.as_mut() {
            Some(client) => client,
            None => slot.insert(Client::connect(&self.at, &nuid(random_u64(), random_u64()))?),
        };
        if !self.bucket_ready.get() {
            match need {
                Need::Create => ensure_stream(client, &self.at.bucket)?,
                Need::Existing if !stream_exists(client, &self.at.bucket)? => return missing(),
                Need::Existing => {}
            }
            self.bucket_ready.set(true);
        }
        let result = f(&mut Bucket { c: client, at: &self.at });
        if client.broken {
            *slot = None;
        }
        result
    }

    fn put_in(b: &mut Bucket, key: &str, data: &[u8], options: &PutOptions) -> Result<ObjectMeta, Error> {
        let name = b.at.name(key);
        let existing = b.meta(&name)?;
        let expected = expected_sequence(key, &options.precondition, existing.as_ref())?;
        let id = nuid(random_u64(), random_u64());
        let first = b.write_chunks(&id, data)?;
        let mut info = ObjectInfo {
            name,
            metadata: options.metadata.iter().cloned().collect(),
            options: Some(MetaOptions { link: None, max_chunk_size: Some(CHUNK_SIZE as u32) }),
            bucket: b.at.bucket.clone(),
            nuid: id.clone(),
            size: data.len() as u64,
            mtime: object::rfc3339(now_ms()),
            chunks: data.len().div_ceil(CHUNK_SIZE) as u32,
            digest: object::digest(data),
            ..ObjectInfo::default()
        };
        if let Some(first) = first {
            info.headers.insert(FIRST_CHUNK_HEADER.into(), vec![first.to_string()]);
        }
        let seq = match b.publish_meta(&info, expected) {
            Ok(seq) => seq,
            Err(e) => {
                // Only a lost precondition proves the meta record did not
                // land; after any other failure it may have (an ack lost on
                // the way back), and purging would leave it pointing at
                // nothing. Leftover chunks are only space.
                if matches!(e, Error::PreconditionFailed(_)) {
                    b.purge_quietly(&chunk_subject(&b.at.bucket, &id));
                }
                return Err(e);
            }
        };
        if let Some(old) = existing.filter(|c| !c.info.deleted && !c.info.nuid.is_empty()) {
            b.purge_quietly(&chunk_subject(&b.at.bucket, &old.info.nuid));
        }
        Ok(object_meta(key, &Current { info, seq, modified_ms: Some(now_ms()) }))
    }

    /// Write a deletion record over a live object and free its chunks.
    /// A read from a bucket that does not exist (yet).
    fn no_bucket(&self, key: &str) -> Error {
        Error::not_found(format!("{key}: bucket `{}` does not exist", self.at.bucket))
    }

    fn delete_in(b: &mut Bucket, key: &str) -> Result<(), Error> {
        let Some(cur) = b.meta(&b.at.name(key))? else { return Ok(()) };
        if cur.info.deleted {
            return Ok(());
        }
        let old_nuid = cur.info.nuid.clone();
        let deleted = ObjectInfo {
            deleted: true,
            size: 0,
            chunks: 0,
            digest: String::new(),
            headers: Default::default(),
            mtime: object::rfc3339(now_ms()),
            ..cur.info
        };
        b.publish_meta(&deleted, None)?;
        if !old_nuid.is_empty() {
            b.purge(&chunk_subject(&b.at.bucket, &old_nuid))?;
        }
        Ok(())
    }
}

impl Backend for Nats {
    fn info() -> PluginInfo {
        PluginInfo {
            capabilities: Capabilities {
                conditional_writes: true,
                max_delete_batch: MAX_BATCH,
                max_list_page: MAX_BATCH,
                ..Capabilities::single_put(MAX_PUT_SIZE)
            },
            needs_sockets: true,
            ..PluginInfo::basic(
                "nats",
                env!("CARGO_PKG_VERSION"),
                "NATS JetStream object store (nats://[user:password@]host[:port]/bucket[/path]); plain TCP, \
                 user/password, token, NKey or JWT authentication",
                &["nats"],
            )
            .with_settings(settings())
        }
    }

    fn open(config: Config) -> Result<Self, Error> {
        Ok(Nats { at: Location::from_config(&config)?, conn: RefCell::new(None), bucket_ready: Cell::new(false) })
    }

    fn put(&self, key: &str, data: Vec<u8>, options: PutOptions) -> Result<ObjectMeta, Error> {
        self.call(Need::Create, || Err(self.no_bucket(key)), |b| Self::put_in(b, key, &data, &options))
    }

    fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Vec<u8>, Error> {
        self.call(
            Need::Existing,
            || Err(self.no_bucket(key)),
            |b| {
                let cur = b.live(key)?;
                b.read(key, &cur, range)
            },
        )
    }

    fn head(&self, key: &str) -> Result<ObjectMeta, Error> {
        self.call(Need::Existing, || Err(self.no_bucket(key)), |b| b.live(key).map(|cur| object_meta(key, &cur)))
    }

    fn list(&self, prefix: &str, cursor: Option<String>, max_keys: u32) -> Result<ListPage, Error> {
        let limit = max_keys.clamp(1, MAX_BATCH) as usize;
        let empty = || Ok(ListPage { objects: Vec::new(), next_cursor: None });
        self.call(Need::Existing, empty, |b| {
            let mut keys: Vec<String> = b
                .names()?
                .iter()
                .filter_map(|n| b.at.key_of(n))
                .filter(|k| k.starts_with(prefix) && cursor.as_deref().is_none_or(|c| *k > c))
                .map(str::to_string)
                .collect();
            keys.sort();
            let (mut objects, mut more) = (Vec::new(), false);
            for key in keys {
                if objects.len() == limit {
                    more = true;
                    break;
                }
                // Names come from the subjects; deleted objects keep theirs.
                if let Some(cur) = b.meta(&b.at.name(&key))?.filter(|c| !c.info.deleted) {
                    objects.push(object_meta(&key, &cur));
                }
            }
            let next_cursor = if more { objects.last().map(|o: &ObjectMeta| o.key.clone()) } else { None };
            Ok(ListPage { objects, next_cursor })
        })
    }

    fn delete(&self, keys: Vec<String>) -> Result<Vec<DeleteFailure>, Error> {
        check_delete_batch(keys.len(), MAX_BATCH)?;
        let mut failures = Vec::new();
        for key in keys {
            if let Err(error) = self.call(Need::Existing, || Ok(()), |b| Self::delete_in(b, &key)) {
                failures.push(DeleteFailure { key, error });
            }
        }
        Ok(failures)
    }
}

export_backend!(Nats);
