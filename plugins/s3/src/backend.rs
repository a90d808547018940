//! The contract's operations as S3 requests.

use crate::client::{Client, ok};
use crate::sse::Sse;
use crate::xml::bare_etag;
use crate::{errors, handle, time, url, xml};
use md5::{Digest, Md5};
use sluice_sdk::http::{Method, Response};
use sluice_sdk::*;

/// Largest single put. S3 takes 5 GiB, but the body crosses into the
/// plugin as one list and must fit its memory; bigger objects go multipart.
const MAX_PUT_SIZE: u64 = 64 << 20;
/// S3's floor for every part but the last.
const MIN_PART_SIZE: u64 = 5 << 20;
/// S3 allows 5 GiB parts; declared lower for the same memory reason as
/// `MAX_PUT_SIZE` (the host sends parts of a few MiB).
const MAX_PART_SIZE: u64 = 64 << 20;
/// S3's limit on parts per upload.
const MAX_PARTS: u32 = 10_000;
/// S3's limit on keys per DeleteObjects and per ListObjectsV2 page.
const MAX_BATCH: u32 = 1000;
/// S3's largest object: 5 TiB.
const MAX_OBJECT_SIZE: u64 = 5 << 40;
/// Marks a list cursor that is a key to resume after rather than a
/// continuation token (no S3 token starts with it).
const START_AFTER_CURSOR: &str = "sluice-after:";
/// Prefix of user metadata headers.
const META_PREFIX: &str = "x-amz-meta-";

pub struct S3Backend {
    client: Client,
    storage_class: Option<String>,
    sse: Sse,
    conditional_writes: bool,
}

impl S3Backend {
    /// Headers shared by PutObject and CreateMultipartUpload: metadata,
    /// storage class and encryption.
    fn object_headers(&self, options: &PutOptions) -> Result<Vec<(String, String)>, Error> {
        let mut headers = Vec::new();
        for (k, v) in &options.metadata {
            // Header values are ASCII; anything else would be mangled by
            // the store and come back different.
            if !v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                return Err(Error::invalid_config(format!(
                    "metadata {k} must be printable ASCII for S3"
                )));
            }
            headers.push((format!("{META_PREFIX}{k}"), v.clone()));
        }
        if let Some(class) = &self.storage_class {
            headers.push(("x-amz-storage-class".into(), class.clone()));
        }
        headers.extend(self.sse.write_headers());
        Ok(headers)
    }

    fn condition_header(&self, precondition: &Precondition) -> Result<Option<(String, String)>, Error> {
        if *precondition != Precondition::None && !self.conditional_writes {
            return Err(Error::unsupported(
                "conditional writes are turned off for this store (conditional-writes=false)",
            ));
        }
        Ok(match precondition {
            Precondition::None => None,
            Precondition::IfAbsent => Some(("if-none-match".into(), "*".into())),
            Precondition::IfMatch(etag) => Some(("if-match".into(), format!("\"{}\"", bare_etag(etag)))),
        })
    }

    /// Map a failed conditional write: S3 answers If-Match on a missing
    /// object with 404, which for the contract is a failed precondition.
    fn write_error(&self, response: &Response, op: &str, target: &str, precondition: &Precondition) -> Error {
        match self.client.error(response, op, target) {
            Error::NotFound(m) if matches!(precondition, Precondition::IfMatch(_)) => Error::precondition_failed(m),
            e => e,
        }
    }

    fn meta_from_headers(key: &str, response: &Response) -> ObjectMeta {
        let size = response
            .header("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut meta = ObjectMeta::new(key, size, response.header("etag").map(bare_etag).unwrap_or_default());
        meta.modified_ms = response.header("last-modified").and_then(time::http_date_ms);
        meta.metadata = response
            .headers
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(META_PREFIX).map(|m| (m.to_string(), v.clone())))
            .collect();
        meta
    }
}

/// The settings this plugin reads (Litestream's S3 keys); each may also
/// come from the URL's query under its Litestream (camelCase) name.
fn settings() -> [Setting; 17] {
    [
        Setting::new(
            "access-key-id",
            "access key id; else AWS_ACCESS_KEY_ID or the shared credentials file",
        ),
        Setting::new("secret-access-key", "secret access key").secret(),
        Setting::new("session-token", "session token of temporary credentials").secret(),
        Setting::new("region", "bucket region; else from the endpoint or us-east-1"),
        Setting::new("endpoint", "S3-compatible endpoint (https://host or host); else AWS"),
        Setting::new("bucket", "bucket, when the URL does not name it"),
        Setting::new("path", "path within the bucket, when the URL does not give it"),
        Setting::new(
            "force-path-style",
            "path-style requests (bucket in the path); default by provider",
        ),
        Setting::new("sign-payload", "sign the body's SHA-256 (default true)"),
        Setting::new("conditional-writes", "use If-None-Match/If-Match puts (default true)"),
        Setting::new("storage-class", "storage class of new objects, e.g. STANDARD_IA"),
        Setting::new("skip-verify", "refused on https: sluice always verifies TLS"),
        Setting::new("part-size", "multipart part size in bytes (read by the host)"),
        Setting::new("concurrency", "parts uploaded at once (read by the host)"),
        Setting::new("sse-customer-key", "SSE-C key, base64 of 32 bytes").secret(),
        Setting::new("sse-customer-algorithm", "SSE-C algorithm (default AES256)"),
        Setting::new("sse-kms-key-id", "SSE-KMS key id"),
    ]
}

impl Backend for S3Backend {
    fn info() -> PluginInfo {
        PluginInfo {
            capabilities: Capabilities {
                conditional_writes: true,
                ranged_reads: true,
                multipart_upload: true,
                max_object_size: Some(MAX_OBJECT_SIZE),
                max_put_size: MAX_PUT_SIZE,
                min_part_size: MIN_PART_SIZE,
                max_part_size: MAX_PART_SIZE,
                max_parts: MAX_PARTS,
                max_delete_batch: MAX_BATCH,
                max_list_page: MAX_BATCH,
            },
            ..PluginInfo::basic(
                "s3",
                env!("CARGO_PKG_VERSION"),
                "Amazon S3 and S3-compatible stores (s3://bucket/path), Alibaba Cloud OSS (oss://bucket/path); SigV4, conditional writes, multipart",
                &["s3", "oss"],
            )
            .with_settings(settings())
        }
    }

    /// Conditional writes only where the store was not told it lacks
    /// them (`conditional-writes: false`).
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            conditional_writes: self.conditional_writes,
            ..Self::info().capabilities
        }
    }

    fn open(config: Config) -> Result<Self, Error> {
        let resolved = url::resolve(&config)?;
        let (key_id, secret) = match (config.get("access-key-id"), config.get("secret-access-key")) {
            (Some(k), Some(s)) => (k, s),
            _ => {
                return Err(Error::invalid_config(format!(
                    "no S3 credentials for {}: set `access-key-id` and `secret-access-key` \
                     (in the config file, or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)",
                    config.url
                )));
            }
        };
        let loc = &resolved.location;
        debug!(
            "s3 store: bucket {} prefix {:?} at {}://{} region {} ({} style)",
            loc.bucket,
            loc.prefix,
            loc.scheme,
            loc.host,
            loc.region,
            if loc.path_style { "path" } else { "virtual-host" }
        );
        let client = Client::new(
            resolved.location,
            key_id,
            secret,
            config.get("session-token"),
            resolved.sign_payload,
        );
        Ok(S3Backend {
            client,
            storage_class: resolved.storage_class,
            sse: resolved.sse,
            conditional_writes: resolved.conditional_writes,
        })
    }

    fn put(&self, key: &str, data: Vec<u8>, options: PutOptions) -> Result<ObjectMeta, Error> {
        let full = self.client.full_key(key);
        let condition = self.condition_header(&options.precondition)?;
        let request = self
            .client
            .object(Method::Put, &full, &[])
            .headers(self.object_headers(&options)?)
            .headers(condition)
            .body(&data, options.content_sha256.as_deref());
        let response = self.client.send(request)?;
        if !ok(&response) {
            return Err(self.write_error(&response, "put", &full, &options.precondition));
        }
        let Some(etag) = response.header("etag").map(bare_etag) else {
            // A store that does not say: ask, rather than return no etag.
            return self.head(key);
        };
        let mut meta = ObjectMeta::new(key, data.len() as u64, etag);
        meta.metadata = options.metadata;
        Ok(meta)
    }

    fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Vec<u8>, Error> {
        let full = self.client.full_key(key);
        // SSE-C objects are decrypted only for a request carrying the key.
        let mut request = self
            .client
            .object(Method::Get, &full, &[])
            .headers(self.sse.data_headers());
        if let Some(r) = range {
            if r.length == 0 {
                // An empty range reads nothing, but a missing key must still be not-found.
                self.head(key)?;
                return Ok(Vec::new());
            }
            let last = r.offset.saturating_add(r.length - 1);
            request = request.header("range", format!("bytes={}-{last}", r.offset));
        }
        let response = self.client.send_streaming(request)?;
        match response.status {
            // A range that starts at or past the end reads nothing.
            416 => Ok(Vec::new()),
            // 200: the store ignored the range; only the range is read.
            200 | 206 => response.read_range(range),
            _ => Err(self.client.error(&response.into_response()?, "get", &full)),
        }
    }

    fn head(&self, key: &str) -> Result<ObjectMeta, Error> {
        let full = self.client.full_key(key);
        // S3 refuses even the metadata of an SSE-C object without the key.
        let request = self
            .client
            .object(Method::Head, &full, &[])
            .headers(self.sse.data_headers());
        let response = self.client.send(request)?;
        if !ok(&response) {
            return Err(self.client.error(&response, "head", &full));
        }
        Ok(Self::meta_from_headers(key, &response))
    }

    fn list(&self, prefix: &str, cursor: Option<String>, max_keys: u32) -> Result<ListPage, Error> {
        let full_prefix = self.client.full_key(prefix);
        let max = max_keys.clamp(1, MAX_BATCH).to_string();
        let mut query = vec![
            ("list-type", "2"),
            ("max-keys", max.as_str()),
            ("prefix", full_prefix.as_str()),
        ];
        match cursor.as_deref().map(|c| c.strip_prefix(START_AFTER_CURSOR).ok_or(c)) {
            Some(Ok(after)) => query.push(("start-after", after)),
            Some(Err(token)) => query.push(("continuation-token", token)),
            None => {}
        }
        let response = self.client.send(self.client.bucket(Method::Get, &query))?;
        if !ok(&response) {
            return Err(self.client.error(&response, "list", &full_prefix));
        }
        let page = xml::list(&response.body)
            .map_err(|e| Error::transient(format!("S3 list of {full_prefix:?}: unreadable answer: {e}")))?;
        // Some stores page without tokens: resume after the last key instead.
        let fallback = page.entries.last().map(|e| format!("{START_AFTER_CURSOR}{}", e.key));
        let root = &self.client.loc.prefix;
        let objects = page
            .entries
            .into_iter()
            // Keys outside the contract's rules (a console's `dir/` marker)
            // could never be read back through it: leave them out.
            .filter_map(|e| {
                let key = e.key.strip_prefix(root.as_str())?;
                validate_key(key).ok()?;
                let mut meta = ObjectMeta::new(key, e.size, bare_etag(&e.etag));
                meta.modified_ms = e.last_modified.as_deref().and_then(time::iso8601_ms);
                Some(meta)
            })
            .collect();
        let next_cursor = if page.truncated {
            page.next_token.or(fallback)
        } else {
            None
        };
        Ok(ListPage { objects, next_cursor })
    }

    fn delete(&self, keys: Vec<String>) -> Result<Vec<DeleteFailure>, Error> {
        if keys.len() > MAX_BATCH as usize {
            return Err(Error::invalid_config(format!(
                "delete of {} keys exceeds max-delete-batch {MAX_BATCH}",
                keys.len()
            )));
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let full: Vec<String> = keys.iter().map(|k| self.client.full_key(k)).collect();
        let body = xml::delete_body(full.iter().map(String::as_str));
        let md5 = crate::encode::base64(&Md5::digest(body.as_bytes()));
        let request = self
            .client
            .bucket(Method::Post, &[("delete", "")])
            .header("content-md5", md5)
            .header("content-type", "application/xml")
            .body(body.as_bytes(), None);
        let response = self.client.send(request)?;
        let target = format!("{} keys", keys.len());
        if !ok(&response) {
            return Err(self.client.error(&response, "delete", &target));
        }
        let errors = xml::delete_errors(&response.body)
            .map_err(|e| Error::transient(format!("S3 delete: unreadable answer: {e}")))?;
        let root = &self.client.loc.prefix;
        Ok(errors
            .into_iter()
            .filter(|(_, code, _)| code != "NoSuchKey")
            .map(|(full_key, code, message)| {
                let error = errors::from_code(&code, &message, &self.client.context("delete", &full_key));
                let key = full_key.strip_prefix(root.as_str()).unwrap_or(&full_key).to_string();
                DeleteFailure { key, error }
            })
            .collect())
    }

    fn create_upload(&self, key: &str, options: PutOptions) -> Result<String, Error> {
        // Checked now so a refused precondition fails before any part is sent.
        self.condition_header(&options.precondition)?;
        let full = self.client.full_key(key);
        let request = self
            .client
            .object(Method::Post, &full, &[("uploads", "")])
            .headers(self.object_headers(&options)?);
        let response = self.client.send(request)?;
        if !ok(&response) {
            return Err(self.client.error(&response, "create-upload", &full));
        }
        let id = xml::upload_id(&response.body)
            .map_err(|e| Error::transient(format!("S3 create-upload of {full:?}: {e}")))?;
        Ok(handle::encode(&id, &options.precondition))
    }

    fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        data: Vec<u8>,
        content_sha256: Option<Vec<u8>>,
    ) -> Result<UploadedPart, Error> {
        let full = self.client.full_key(key);
        let (id, _) = handle::decode(upload_id);
        let number = part_number.to_string();
        let request = self
            .client
            .object(Method::Put, &full, &[("partNumber", &number), ("uploadId", id)])
            // Each part is encrypted as it arrives, with the upload's SSE-C key.
            .headers(self.sse.data_headers())
            .body(&data, content_sha256.as_deref());
        let response = self.client.send(request)?;
        if !ok(&response) {
            return Err(self.client.error(&response, "upload-part", &full));
        }
        let etag = response
            .header("etag")
            .map(bare_etag)
            .ok_or_else(|| Error::transient(format!("S3 upload-part of {full:?}: no ETag in the answer")))?;
        Ok(UploadedPart { part_number, etag })
    }

    fn complete_upload(&self, key: &str, upload_id: &str, parts: Vec<UploadedPart>) -> Result<ObjectMeta, Error> {
        let full = self.client.full_key(key);
        let (id, precondition) = handle::decode(upload_id);
        let body = xml::complete_body(parts.iter().map(|p| (p.part_number, p.etag.as_str())));
        let request = self
            .client
            .object(Method::Post, &full, &[("uploadId", id)])
            .header("content-type", "application/xml")
            .headers(self.condition_header(&precondition)?)
            .body(body.as_bytes(), None);
        let response = self.client.send(request)?;
        if !ok(&response) {
            return Err(self.write_error(&response, "complete-upload", &full, &precondition));
        }
        // S3 may fail a completion after answering 200 (it streams
        // whitespace while assembling), with an error document as the body.
        if let Some(e) = xml::error(&response.body) {
            return Err(
                match errors::from_code(&e.code, &e.message, &self.client.context("complete-upload", &full)) {
                    Error::NotFound(m) if matches!(precondition, Precondition::IfMatch(_)) => {
                        Error::precondition_failed(m)
                    }
                    other => other,
                },
            );
        }
        self.head(key)
    }

    fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), Error> {
        let full = self.client.full_key(key);
        let (id, _) = handle::decode(upload_id);
        let response = self
            .client
            .send(self.client.object(Method::Delete, &full, &[("uploadId", id)]))?;
        if ok(&response) {
            return Ok(());
        }
        match self.client.error(&response, "abort-upload", &full) {
            // Unknown or already finished: nothing left to free.
            Error::NotFound(_) => Ok(()),
            e => Err(e),
        }
    }
}
