//! The object store's operations over one connection: meta records,
//! chunks, purges and the subject listing (see the crate docs for the
//! layout).

use crate::CHUNK_SIZE;
use crate::client::Client;
use crate::js::{self, MsgGetAnswer, NO_MESSAGE_FOUND, STREAM_NOT_FOUND, StoredMsg, StreamInfo};
use crate::location::Location;
use crate::object::{self, ObjectInfo, chunk_span, chunk_subject, meta_subject};
use sluice_sdk::{ByteRange, Error};

/// JetStream's answer when a stream of that name exists already (another
/// writer created the bucket first).
const STREAM_NAME_IN_USE: u64 = 10058;

/// An object's newest meta record and where it sits in the stream.
pub struct Current {
    pub info: ObjectInfo,
    /// The meta message's stream sequence: the object's etag.
    pub seq: u64,
    pub modified_ms: Option<u64>,
}

/// One bucket, reached over one connection.
pub struct Bucket<'a> {
    pub c: &'a mut Client,
    pub at: &'a Location,
}

/// Whether the bucket's stream exists.
pub fn stream_exists(c: &mut Client, bucket: &str) -> Result<bool, Error> {
    let stream = object::stream_name(bucket);
    match c.api::<serde_json::Value>(&format!("STREAM.INFO.{stream}"), "")? {
        Ok(_) => Ok(true),
        Err(e) if e.err_code == STREAM_NOT_FOUND => Ok(false),
        Err(e) => Err(js::error(&format!("bucket `{bucket}` on {}", c.server()), &e)),
    }
}

/// Create the bucket's stream unless it exists.
pub fn ensure_stream(c: &mut Client, bucket: &str) -> Result<(), Error> {
    if stream_exists(c, bucket)? {
        return Ok(());
    }
    let stream = object::stream_name(bucket);
    let what = format!("bucket `{bucket}` on {}", c.server());
    sluice_sdk::info!("creating object store bucket `{bucket}` (stream {stream}) on {}", c.server());
    let config = js::stream_config(bucket).to_string();
    match c.api::<serde_json::Value>(&format!("STREAM.CREATE.{stream}"), &config)? {
        Ok(_) => Ok(()),
        Err(e) if e.err_code == STREAM_NAME_IN_USE => Ok(()),
        Err(e) => Err(js::error(&format!("creating {what}"), &e)),
    }
}

impl Bucket<'_> {
    fn stream(&self) -> String {
        object::stream_name(&self.at.bucket)
    }

    /// `STREAM.MSG.GET`; `None` when no message matches.
    fn msg(&mut self, body: &str, what: &str) -> Result<Option<StoredMsg>, Error> {
        match self.c.api::<MsgGetAnswer>(&format!("STREAM.MSG.GET.{}", self.stream()), body)? {
            Ok(answer) => Ok(Some(answer.message)),
            Err(e) if e.err_code == NO_MESSAGE_FOUND => Ok(None),
            Err(e) => Err(js::error(what, &e)),
        }
    }

    /// The newest meta record of `name`, deleted or not.
    pub fn meta(&mut self, name: &str) -> Result<Option<Current>, Error> {
        let subject = meta_subject(&self.at.bucket, name);
        let Some(m) = self.msg(&js::last_by_subject(&subject), name)? else { return Ok(None) };
        let info: ObjectInfo = serde_json::from_slice(&m.payload()?)
            .map_err(|e| Error::permanent(format!("{name}: unreadable object store meta record: {e}")))?;
        Ok(Some(Current { info, seq: m.seq, modified_ms: object::parse_rfc3339(&m.time) }))
    }

    /// The object at `key`, if it exists and is not deleted.
    pub fn live(&mut self, key: &str) -> Result<Current, Error> {
        match self.meta(&self.at.name(key))? {
            Some(c) if c.info.is_link() => {
                Err(Error::unsupported(format!("{key} is an object store link, which this plugin does not follow")))
            }
            Some(c) if !c.info.deleted => Ok(c),
            _ => Err(Error::not_found(format!("{key} (bucket `{}`)", self.at.bucket))),
        }
    }

    /// Publish `data` as chunks on a new subject; the first chunk's
    /// sequence when they landed one after another. A failure purges what
    /// was written.
    pub fn write_chunks(&mut self, nuid: &str, data: &[u8]) -> Result<Option<u64>, Error> {
        let subject = chunk_subject(&self.at.bucket, nuid);
        let (mut first, mut last, mut in_a_row) = (None, 0, true);
        for chunk in data.chunks(CHUNK_SIZE) {
            let what = format!("writing a chunk to {subject}");
            let ack = self.c.publish(&subject, &[], chunk).and_then(|r| r.map_err(|e| js::error(&what, &e)));
            let seq = match ack {
                Ok(ack) => ack.seq,
                Err(e) => {
                    self.purge_quietly(&subject);
                    return Err(e);
                }
            };
            in_a_row &= first.is_none() || seq == last + 1;
            first.get_or_insert(seq);
            last = seq;
        }
        Ok(first.filter(|_| in_a_row))
    }

    /// Publish a meta record (rolling up the older ones); with `expected`,
    /// only if the subject's newest message is that sequence (0: none).
    pub fn publish_meta(&mut self, info: &ObjectInfo, expected: Option<u64>) -> Result<u64, Error> {
        let subject = meta_subject(&self.at.bucket, &info.name);
        let payload = serde_json::to_vec(info).map_err(|e| Error::permanent(format!("{}: {e}", info.name)))?;
        let expected = expected.map(|s| s.to_string());
        let mut headers = vec![("Nats-Rollup", "sub")];
        if let Some(seq) = &expected {
            headers.push(("Nats-Expected-Last-Subject-Sequence", seq.as_str()));
        }
        match self.c.publish(&subject, &headers, &payload)? {
            Ok(ack) => Ok(ack.seq),
            Err(e) => Err(js::error(&info.name, &e)),
        }
    }

    /// Remove every message on `subject` (an object version's chunks).
    pub fn purge(&mut self, subject: &str) -> Result<(), Error> {
        let api = format!("STREAM.PURGE.{}", self.stream());
        match self.c.api::<serde_json::Value>(&api, &js::purge_subject(subject))? {
            Ok(_) => Ok(()),
            Err(e) => Err(js::error(&format!("purging {subject}"), &e)),
        }
    }

    /// Purge as cleanup after a failure that matters more: a leftover is
    /// only space, so it is logged, not returned.
    pub fn purge_quietly(&mut self, subject: &str) {
        if self.c.broken {
            return;
        }
        if let Err(e) = self.purge(subject) {
            sluice_sdk::warn!("could not purge {subject} (space only, not data): {}", e.message());
        }
    }

    /// Every object name with a meta record (deleted ones included), from
    /// the stream's per-subject state, page by page.
    pub fn names(&mut self) -> Result<Vec<String>, Error> {
        let api = format!("STREAM.INFO.{}", self.stream());
        let filter = object::meta_filter(&self.at.bucket);
        let mut names = Vec::new();
        let mut offset = 0;
        loop {
            let info = match self.c.api::<StreamInfo>(&api, &js::subjects_page(&filter, offset))? {
                Ok(info) => info,
                Err(e) => return Err(js::error(&format!("listing bucket `{}`", self.at.bucket), &e)),
            };
            let subjects = info.state.subjects.unwrap_or_default();
            if subjects.is_empty() {
                return Ok(names);
            }
            offset += subjects.len() as u64;
            names.extend(subjects.keys().filter_map(|s| object::name_of_meta_subject(&self.at.bucket, s)));
            if offset >= info.total {
                return Ok(names);
            }
        }
    }

    /// The bytes of an object, or of a range of it, reading only the
    /// chunks the range covers when this plugin wrote them (else every
    /// chunk up to the range's end). A whole read checks the digest.
    pub fn read(&mut self, key: &str, cur: &Current, range: Option<ByteRange>) -> Result<Vec<u8>, Error> {
        let info = &cur.info;
        let (offset, length) = range.map_or((0, info.size), |r| (r.offset, r.length));
        let Some(span) = chunk_span(info.size, info.chunk_size(), offset, length) else { return Ok(Vec::new()) };
        let data = match info.first_chunk() {
            Some(first) if info.chunk_size() == CHUNK_SIZE as u64 => self.read_indexed(key, cur, first, span)?,
            _ => self.read_scanning(key, cur, offset, length)?,
        };
        if range.is_none() && !info.digest.is_empty() && object::digest(&data) != info.digest {
            return Err(Error::transient(format!("{key}: digest mismatch (overwritten while being read?)")));
        }
        Ok(data)
    }

    /// Chunks `span.0..=span.1` fetched by sequence.
    fn read_indexed(
        &mut self,
        key: &str,
        cur: &Current,
        first: u64,
        span: (u64, u64, u64, u64),
    ) -> Result<Vec<u8>, Error> {
        let (a, b, skip, want) = span;
        let subject = chunk_subject(&self.at.bucket, &cur.info.nuid);
        let mut data = Vec::with_capacity((skip + want) as usize);
        for index in a..=b {
            let m = self.msg(&js::by_sequence(first + index), key)?.filter(|m| m.subject == subject);
            let m = m.ok_or_else(|| vanished(key))?;
            data.extend_from_slice(&m.payload()?);
        }
        slice(key, data, skip, want)
    }

    /// Chunks in order from the first, keeping the bytes of the range.
    fn read_scanning(&mut self, key: &str, cur: &Current, offset: u64, length: u64) -> Result<Vec<u8>, Error> {
        let subject = chunk_subject(&self.at.bucket, &cur.info.nuid);
        let end = offset.saturating_add(length).min(cur.info.size);
        let (mut seq, mut pos, mut data) = (0, 0u64, Vec::new());
        while pos < end {
            let m = self.msg(&js::next_by_subject(seq, &subject), key)?.ok_or_else(|| vanished(key))?;
            let chunk = m.payload()?;
            let next = pos + chunk.len() as u64;
            if next > offset {
                let from = offset.saturating_sub(pos) as usize;
                let to = (end.min(next) - pos) as usize;
                data.extend_from_slice(&chunk[from..to]);
            }
            (seq, pos) = (m.seq + 1, next);
        }
        Ok(data)
    }
}

fn vanished(key: &str) -> Error {
    Error::transient(format!("{key}: a chunk is missing (the object was overwritten or deleted while being read?)"))
}

/// `skip..skip + want` of the chunks read, which must hold it.
fn slice(key: &str, mut data: Vec<u8>, skip: u64, want: u64) -> Result<Vec<u8>, Error> {
    if (data.len() as u64) < skip + want {
        return Err(Error::permanent(format!(
            "{key}: chunks hold {} bytes, fewer than the meta record says",
            data.len()
        )));
    }
    data.truncate((skip + want) as usize);
    data.drain(..skip as usize);
    Ok(data)
}
