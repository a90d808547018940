//! The store's operations as WebDAV requests (see the crate docs).

use crate::location::Location;
use crate::multistatus::{self, bare_etag, http_date_ms};
use crate::{MAX_BATCH, MAX_PUT_SIZE, OWN_PREFIX};
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sluice_sdk::http::{Method, Request, Response, status_error};
use sluice_sdk::*;
use std::collections::BTreeMap;

/// The properties asked for: size, ETag, modification time, and whether
/// the resource is a collection.
pub const PROPFIND_BODY: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<propfind xmlns="DAV:"><prop><resourcetype/><getcontentlength/><getetag/><getlastmodified/></prop></propfind>"#;

struct WebDav {
    at: Location,
    /// The largest PUT this server takes (`webdav-max-put-size`).
    max_put: u64,
}

impl WebDav {
    fn request<'a>(&self, method: Method, url: String) -> Request<'a> {
        let request = Request::new(method, url);
        match &self.at.authorization {
            Some(a) => request.header("authorization", a.clone()),
            None => request,
        }
    }

    /// A key's segments; keys naming this plugin's own files are refused.
    fn segments(key: &str) -> Result<Vec<&str>, Error> {
        validate_key(key)?;
        let segments: Vec<&str> = key.split('/').collect();
        if segments.iter().any(|s| s.starts_with(OWN_PREFIX)) {
            return Err(Error::invalid_config(format!(
                "key {key:?}: names starting with {OWN_PREFIX} are the plugin's own"
            )));
        }
        Ok(segments)
    }

    /// Create the collections from the server's root down to `dirs` below
    /// the replica's root; existing ones answer 405, which is fine.
    fn make_collections(&self, dirs: &[&str]) -> Result<(), Error> {
        let all: Vec<&str> = self.at.root.iter().map(String::as_str).chain(dirs.iter().copied()).collect();
        let below_root = Location { origin: self.at.origin.clone(), root: Vec::new(), authorization: None };
        for depth in 1..=all.len() {
            let url = below_root.url(&all[..depth], true);
            let r = self.request(Method::Other("MKCOL"), url.clone()).send()?;
            if !matches!(r.status, 200..=299 | 301 | 405) {
                return Err(status_error(&format!("MKCOL {url}"), &r));
            }
        }
        Ok(())
    }

    fn send_put(&self, url: &str, data: &[u8]) -> Result<Response, Error> {
        self.request(Method::Put, url.to_string()).header("content-type", "application/octet-stream").body(data).send()
    }

    /// PUT, creating the parent collections when the server says they are
    /// missing (409, or 404 from some servers).
    fn put_file(&self, segments: &[&str], data: &[u8]) -> Result<Response, Error> {
        let url = self.at.url(segments, false);
        let mut r = self.send_put(&url, data)?;
        if matches!(r.status, 404 | 409) {
            self.make_collections(&segments[..segments.len() - 1])?;
            r = self.send_put(&url, data)?;
        }
        if !(200..=299).contains(&r.status) {
            return Err(status_error(&format!("PUT {url}"), &r));
        }
        Ok(r)
    }

    /// The sidecar holding `segments`' metadata.
    fn sidecar(segments: &[&str]) -> Vec<String> {
        let mut s: Vec<String> = segments.iter().map(|s| s.to_string()).collect();
        if let Some(name) = s.last_mut() {
            *name = format!("{OWN_PREFIX}meta.{name}");
        }
        s
    }

    /// Metadata of the object whose ETag is `etag`: what its sidecar holds
    /// if the sidecar was written for this very object.
    fn read_metadata(&self, segments: &[&str], etag: &str) -> Result<Vec<(String, String)>, Error> {
        let sidecar = Self::sidecar(segments);
        let names: Vec<&str> = sidecar.iter().map(String::as_str).collect();
        let r = self.request(Method::Get, self.at.url(&names, false)).send()?;
        match r.status {
            404 => Ok(Vec::new()),
            200 => Ok(decode_metadata(&r.text(), etag)),
            _ => Err(status_error("GET metadata", &r)),
        }
    }

    fn stat(&self, key: &str, segments: &[&str]) -> Result<ObjectMeta, Error> {
        let url = self.at.url(segments, false);
        let r = self.request(Method::Head, url.clone()).send()?;
        if !(200..=299).contains(&r.status) {
            return Err(status_error(&format!("HEAD {url}"), &r));
        }
        let size = r.header("content-length").and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        let etag = r.header("etag").map(bare_etag).unwrap_or_default();
        let mut meta = ObjectMeta::new(key, size, etag);
        meta.modified_ms = r.header("last-modified").and_then(http_date_ms);
        Ok(meta)
    }

    /// Every object below the collection `dir` whose key starts with
    /// `prefix`, walking one collection at a time.
    fn walk(&self, dir: Vec<String>, prefix: &str, found: &mut BTreeMap<String, ObjectMeta>) -> Result<(), Error> {
        let mut pending = vec![dir];
        while let Some(dir) = pending.pop() {
            let names: Vec<&str> = dir.iter().map(String::as_str).collect();
            let url = self.at.url(&names, true);
            let r = self
                .request(Method::Other("PROPFIND"), url.clone())
                .header("depth", "1")
                .header("content-type", "application/xml; charset=utf-8")
                .body(PROPFIND_BODY.as_bytes())
                .send()?;
            match r.status {
                404 => continue,
                207 => {}
                _ => return Err(status_error(&format!("PROPFIND {url}"), &r)),
            }
            let entries = multistatus::parse(&r.body).map_err(|e| Error::permanent(format!("PROPFIND {url}: {e}")))?;
            let here = dir.join("/");
            for e in entries {
                let Some(key) = self.at.key_of(&e.href) else { continue };
                let key = key.trim_end_matches('/').to_string();
                let name = key.rsplit('/').next().unwrap_or_default();
                if key == here || key.is_empty() || name.starts_with(OWN_PREFIX) {
                    continue;
                }
                if e.collection {
                    let under = format!("{key}/");
                    if under.starts_with(prefix) || prefix.starts_with(&under) {
                        pending.push(key.split('/').map(str::to_string).collect());
                    }
                } else if key.starts_with(prefix) {
                    let mut meta = ObjectMeta::new(&key, e.size, e.etag);
                    meta.modified_ms = e.modified_ms;
                    found.insert(key, meta);
                }
            }
        }
        Ok(())
    }
}

/// Sidecar text: the object's ETag on the first line, then `key=value`
/// lines, both percent-encoded.
fn encode_metadata(etag: &str, metadata: &[(String, String)]) -> String {
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    let mut text = format!("{}\n", enc(etag));
    for (k, v) in metadata {
        text.push_str(&format!("{}={}\n", enc(k), enc(v)));
    }
    text
}

/// The metadata in a sidecar, if it belongs to the object with `etag`.
fn decode_metadata(text: &str, etag: &str) -> Vec<(String, String)> {
    let dec = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let mut lines = text.lines();
    if lines.next().map(dec).as_deref() != Some(etag) {
        return Vec::new();
    }
    lines.filter_map(|l| l.split_once('=')).map(|(k, v)| (dec(k), dec(v))).collect()
}

/// The settings this plugin reads (Litestream's WebDAV keys).
fn settings() -> [Setting; 4] {
    [
        Setting::new("webdav-url", "server URL (http:// or https://), instead of the replica URL's host"),
        Setting::new("webdav-username", "user for Basic authentication"),
        Setting::new("webdav-password", "password for Basic authentication").secret(),
        Setting::new(
            crate::MAX_PUT_SETTING,
            "largest PUT the server (or its proxy) accepts, in bytes (default 128 MiB); larger segments are stored in parts",
        ),
    ]
}

impl Backend for WebDav {
    fn info() -> PluginInfo {
        PluginInfo {
            capabilities: Capabilities {
                conditional_writes: false,
                max_delete_batch: MAX_BATCH,
                max_list_page: MAX_BATCH,
                ..Capabilities::single_put(MAX_PUT_SIZE)
            },
            ..PluginInfo::basic(
                "webdav",
                env!("CARGO_PKG_VERSION"),
                "WebDAV server (webdav://[user[:password]@]host[:port]/path, webdavs:// for https)",
                &["webdav", "webdavs"],
            )
            .with_settings(settings())
        }
    }

    fn open(config: Config) -> Result<Self, Error> {
        let max_put = crate::max_put_size(config.get(crate::MAX_PUT_SETTING)).map_err(Error::invalid_config)?;
        Ok(WebDav { at: Location::from_config(&config)?, max_put })
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Self::info().capabilities;
        caps.max_put_size = self.max_put;
        caps.max_object_size = Some(self.max_put);
        caps.max_part_size = self.max_put;
        caps
    }

    fn put(&self, key: &str, data: Vec<u8>, options: PutOptions) -> Result<ObjectMeta, Error> {
        let segments = Self::segments(key)?;
        if data.len() as u64 > self.max_put {
            return Err(Error::unsupported(format!(
                "{key}: {} bytes is more than the {} a WebDAV object can take in one PUT here (WebDAV has no multipart upload)",
                data.len(),
                self.max_put
            )));
        }
        if options.precondition != Precondition::None {
            // Declared in `info`: an ETag built from whole-second times
            // cannot guard a compare-and-swap, so none is pretended.
            return Err(Error::unsupported("conditional writes: WebDAV ETags cannot guard them (see plugin info)"));
        }
        let r = self.put_file(&segments, &data)?;
        let etag = match r.header("etag") {
            Some(e) => bare_etag(e),
            None => self.stat(key, &segments)?.etag,
        };
        if !options.metadata.is_empty() {
            let sidecar = Self::sidecar(&segments);
            let names: Vec<&str> = sidecar.iter().map(String::as_str).collect();
            let text = encode_metadata(&etag, &options.metadata);
            self.put_file(&names, text.as_bytes())?;
        }
        let mut meta = ObjectMeta::new(key, data.len() as u64, etag);
        meta.metadata = options.metadata;
        Ok(meta)
    }

    fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Vec<u8>, Error> {
        let segments = Self::segments(key)?;
        let url = self.at.url(&segments, false);
        let mut request = self.request(Method::Get, url.clone());
        if let Some(r) = range.filter(|r| r.length > 0) {
            request = request.header("range", format!("bytes={}-{}", r.offset, r.offset + r.length - 1));
        }
        let r = request.send_streaming()?;
        match r.status {
            // 200: a server that ignores Range sends everything; only the
            // range is read.
            200 | 206 => r.read_range(range),
            // A range that starts past the end selects nothing.
            416 => Ok(Vec::new()),
            _ => Err(status_error(&format!("GET {url}"), &r.into_response()?)),
        }
    }

    fn head(&self, key: &str) -> Result<ObjectMeta, Error> {
        let segments = Self::segments(key)?;
        let mut meta = self.stat(key, &segments)?;
        meta.metadata = self.read_metadata(&segments, &meta.etag)?;
        Ok(meta)
    }

    fn list(&self, prefix: &str, cursor: Option<String>, max_keys: u32) -> Result<ListPage, Error> {
        let dir = prefix.rsplit_once('/').map(|(d, _)| d.split('/').map(str::to_string).collect()).unwrap_or_default();
        let mut found = BTreeMap::new();
        self.walk(dir, prefix, &mut found)?;
        let limit = max_keys.clamp(1, MAX_BATCH);
        Ok(ListPage::from_sorted_keys(found.keys().cloned(), cursor, limit, |k| {
            found.get(k).cloned().unwrap_or_else(|| ObjectMeta::new(k, 0, String::new()))
        }))
    }

    fn delete(&self, keys: Vec<String>) -> Result<Vec<DeleteFailure>, Error> {
        check_delete_batch(keys.len(), MAX_BATCH)?;
        let mut failures = Vec::new();
        for key in keys {
            if let Err(error) = self.delete_one(&key) {
                failures.push(DeleteFailure { key, error });
            }
        }
        Ok(failures)
    }
}

impl WebDav {
    /// Delete an object and its metadata sidecar; either missing is fine.
    fn delete_one(&self, key: &str) -> Result<(), Error> {
        let segments = Self::segments(key)?;
        let sidecar = Self::sidecar(&segments);
        let sidecar: Vec<&str> = sidecar.iter().map(String::as_str).collect();
        // The sidecar first: a failure in between leaves an object without
        // metadata, never metadata without its object.
        for names in [&sidecar[..], &segments[..]] {
            let url = self.at.url(names, false);
            let r = self.request(Method::Delete, url.clone()).send()?;
            if !matches!(r.status, 200..=299 | 404) {
                return Err(status_error(&format!("DELETE {url}"), &r));
            }
        }
        Ok(())
    }
}

export_backend!(WebDav);
