//! The store's operations on an SFTP server (see the crate docs).

use crate::files::{self, Put};
use crate::location::{Location, decode_meta, encode_meta, meta_path, reserved, settings};
use crate::session::Session;
use crate::{MAX_BATCH, MAX_PUT_SIZE, STALE_TEMP_SECS, SWEEP_EVERY_SECS};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::StatusCode;
use sluice_sdk::*;
use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

struct Sftp {
    at: Location,
    /// Opened on the first call, kept for the instance's short life, and
    /// dropped after a connection failure so the next call connects afresh.
    session: RefCell<Option<Session>>,
    /// The last listing, for the pages after its first (the host pages
    /// through one listing within an instance's batch of calls).
    listed: RefCell<Option<(String, Vec<ObjectMeta>)>>,
    /// When each directory this instance swept is due again (Unix
    /// seconds): a warm instance lives on while its replica is busy.
    swept: RefCell<std::collections::HashMap<String, u64>>,
}

/// An SFTP failure, classified, naming what it was doing.
pub(crate) fn sftp_error(doing: &str, e: SftpError) -> Error {
    let msg = format!("{doing}: {e}");
    match &e {
        SftpError::Status(s) => match s.status_code {
            StatusCode::NoSuchFile => Error::not_found(msg),
            StatusCode::PermissionDenied => Error::access_denied(msg),
            StatusCode::NoConnection | StatusCode::ConnectionLost => Error::transient(msg),
            StatusCode::OpUnsupported => Error::unsupported(msg),
            // Failure is SFTP v3's catch-all: a full disk, a quota, a
            // path that is a directory. None heals by retrying at once.
            _ => Error::permanent(msg),
        },
        SftpError::Timeout | SftpError::IO(_) | SftpError::UnexpectedBehavior(_) => Error::transient(msg),
        SftpError::Limited(_) | SftpError::UnexpectedPacket => Error::permanent(msg),
    }
}

fn meta(key: &str, size: u64, mtime: u32) -> ObjectMeta {
    let mut m = ObjectMeta::new(key, size, format!("{size}-{mtime}"));
    m.modified_ms = Some(u64::from(mtime) * 1000);
    m
}

impl Sftp {
    /// Run `work` on the session, connecting first if needed. A failure
    /// that may have broken the connection drops it.
    fn call<T>(&self, work: impl AsyncFnOnce(&Session) -> Result<T, Error>) -> Result<T, Error> {
        let mut slot = self.session.borrow_mut();
        if slot.as_ref().is_some_and(Session::closed) {
            *slot = None;
        }
        let session = match slot.as_mut() {
            Some(s) => s,
            None => slot.insert(Session::connect(&self.at)?),
        };
        let result = session.run(work(session));
        if matches!(&result, Err(e) if e.is_retryable()) {
            *slot = None;
        }
        result
    }
}

impl Backend for Sftp {
    fn info() -> PluginInfo {
        let mut info = PluginInfo::basic(
            "sftp",
            env!("CARGO_PKG_VERSION"),
            "SFTP over SSH (password or key, checked host key); Litestream's sftp:// replicas",
            &["sftp"],
        )
        .with_settings(settings());
        info.capabilities = Capabilities {
            max_delete_batch: MAX_BATCH,
            max_list_page: MAX_BATCH,
            ..Capabilities::single_put(MAX_PUT_SIZE)
        };
        info.needs_sockets = true;
        info
    }

    fn open(config: Config) -> Result<Self, Error> {
        let at = Location::parse(&config)?;
        if at.host_key.is_none() {
            warn!("{}: no host-key set, so the server's key is not checked; set host-key", at.server());
        }
        Ok(Sftp { at, session: RefCell::new(None), listed: RefCell::new(None), swept: RefCell::default() })
    }

    fn put(&self, key: &str, data: Vec<u8>, options: PutOptions) -> Result<ObjectMeta, Error> {
        if options.precondition != Precondition::None {
            return Err(Error::unsupported("conditional writes over SFTP"));
        }
        if reserved(key) {
            return Err(Error::invalid_config(format!("{key}: names ending so are this plugin's own files")));
        }
        self.listed.replace(None);
        let path = self.at.path_of(key);
        let meta_path = meta_path(&path);
        self.call(async |s| {
            let failed = |e| sftp_error(&format!("put {path}"), e);
            let put = Put { path: &path, data: &data, stale: Some(&meta_path), random: random_u64() };
            files::put(&s.sftp, s.ext, put).await.map_err(failed)?;
            let stat = files::stat(&s.sftp, &path).await.map_err(failed)?;
            let (size, mtime) = stat.ok_or_else(|| Error::transient(format!("{path} vanished after its put")))?;
            let mut written = meta(key, size, mtime);
            if !options.metadata.is_empty() {
                let text = encode_meta(&written.etag, &options.metadata);
                let put = Put { path: &meta_path, data: text.as_bytes(), stale: None, random: random_u64() };
                files::put(&s.sftp, s.ext, put).await.map_err(|e| sftp_error(&format!("put {meta_path}"), e))?;
                written.metadata = options.metadata.clone();
            }
            Ok(written)
        })
    }

    fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Vec<u8>, Error> {
        let path = self.at.path_of(key);
        let (offset, len) = range.map_or((0, None), |r| (r.offset, Some(r.length)));
        self.call(async |s| {
            files::read(&s.sftp, &path, offset, len).await.map_err(|e| sftp_error(&format!("read {path}"), e))
        })
    }

    fn head(&self, key: &str) -> Result<ObjectMeta, Error> {
        let path = self.at.path_of(key);
        let meta_path = meta_path(&path);
        let (stat, text) = self.call(async |s| {
            let (stat, text) = futures::join!(files::stat(&s.sftp, &path), files::read_text(&s.sftp, &meta_path));
            let stat = stat.map_err(|e| sftp_error(&format!("stat {path}"), e))?;
            Ok((stat, text.map_err(|e| sftp_error(&format!("read {meta_path}"), e))?))
        })?;
        let (size, mtime) = stat.ok_or_else(|| Error::not_found(path))?;
        let mut found = meta(key, size, mtime);
        found.metadata = text.and_then(|t| decode_meta(&t, &found.etag)).unwrap_or_default();
        Ok(found)
    }

    fn list(&self, prefix: &str, cursor: Option<String>, max_keys: u32) -> Result<ListPage, Error> {
        let cached = self.listed.borrow().as_ref().filter(|(p, _)| cursor.is_some() && p == prefix).is_some();
        if !cached {
            let all = self.walk(prefix)?;
            *self.listed.borrow_mut() = Some((prefix.to_string(), all));
        }
        let listed = self.listed.borrow();
        let objects = listed.as_ref().map(|(_, o)| o.as_slice()).unwrap_or_default();
        let keys = objects.iter().map(|o| o.key.clone());
        Ok(ListPage::from_sorted_keys(keys, cursor, max_keys, |k| {
            let at = objects.binary_search_by(|o| o.key.as_str().cmp(k)).unwrap_or_default();
            objects[at].clone()
        }))
    }

    fn delete(&self, keys: Vec<String>) -> Result<Vec<DeleteFailure>, Error> {
        check_delete_batch(keys.len(), MAX_BATCH)?;
        let paths: Vec<String> = keys.iter().map(|k| self.at.path_of(k)).collect();
        // Objects first, then their metadata files: a failure between
        // leaves a metadata file no listing shows and the next put of the
        // key replaces, never an object with another's metadata.
        self.listed.replace(None);
        let failed = self.call(async |s| {
            let failed = files::remove_all(&s.sftp, &paths).await;
            let gone = paths.iter().zip(&failed).filter(|(_, e)| e.is_none());
            let metas: Vec<String> = gone.map(|(p, _)| meta_path(p)).collect();
            let _ = files::remove_all(&s.sftp, &metas).await;
            // Retention's deletes also collect what killed puts left in
            // these directories (best effort: the deletes are done).
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            for dir in self.due_for_sweep(&paths, now) {
                match files::sweep(&s.sftp, &dir, now, STALE_TEMP_SECS).await {
                    Ok(()) => drop(self.swept.borrow_mut().insert(dir, now + SWEEP_EVERY_SECS)),
                    Err(e) => debug!("sweeping {dir}: {e}"),
                }
            }
            Ok(failed)
        })?;
        let failures = keys.into_iter().zip(paths).zip(failed).filter_map(|((key, path), e)| {
            e.map(|e| DeleteFailure { key, error: sftp_error(&format!("remove {path}"), e) })
        });
        Ok(failures.collect())
    }
}

impl Sftp {
    /// The directories of `paths` due for a sweep at `now` (Unix seconds).
    fn due_for_sweep(&self, paths: &[String], now: u64) -> std::collections::BTreeSet<String> {
        let swept = self.swept.borrow();
        let dirs = paths.iter().filter_map(|p| p.rfind('/').map(|i| p[..=i].to_string()));
        dirs.filter(|d| swept.get(d).is_none_or(|next| now >= *next)).collect()
    }

    /// Every key under `prefix`, ascending, with its size and time. The
    /// walk starts at the prefix's directory, so a listing of one level
    /// does not read the others.
    fn walk(&self, prefix: &str) -> Result<Vec<ObjectMeta>, Error> {
        let dir = prefix.rfind('/').map_or("", |i| &prefix[..=i]);
        let from = format!("{}{dir}", self.at.root);
        let found =
            self.call(async |s| files::walk(&s.sftp, &from).await.map_err(|e| sftp_error(&format!("list {from}"), e)))?;
        let mut all: Vec<ObjectMeta> = found
            .into_iter()
            .map(|(rel, size, mtime)| meta(&format!("{dir}{rel}"), size, mtime))
            .filter(|m| m.key.starts_with(prefix))
            .collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(all)
    }
}

export_backend!(Sftp);
