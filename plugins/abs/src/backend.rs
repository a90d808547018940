//! The store's operations as Azure Blob Storage REST calls (see the crate
//! docs).

use crate::listing::{self, bare_etag};
use crate::location::{Credential, Location};
use crate::upload::{Upload, block_id};
use crate::{API_VERSION, MAX_BATCH, MAX_PART_SIZE, MAX_PARTS, MAX_PUT_SIZE, MIN_PART_SIZE, sign};
use base64::Engine;
use md5::{Digest, Md5};
use sluice_sdk::http::{Method, Request, Response, status_error};
use sluice_sdk::*;
use std::time::{SystemTime, UNIX_EPOCH};

/// Prefix of the metadata headers this plugin writes and reads back.
const META_PREFIX: &str = "x-ms-meta-s_";

struct Abs {
    at: Location,
}

type Headers = Vec<(String, String)>;

fn header(name: &str, value: impl Into<String>) -> (String, String) {
    (name.to_string(), value.into())
}

fn md5_base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(data))
}

fn precondition_headers(precondition: &Precondition) -> Headers {
    match precondition {
        Precondition::None => Vec::new(),
        Precondition::IfAbsent => vec![header("if-none-match", "*")],
        Precondition::IfMatch(etag) => vec![header("if-match", format!("\"{etag}\""))],
    }
}

/// `x-ms-meta-s_NAME` headers: Azure takes C# identifiers as names, the
/// contract's keys are lowercase letters, digits and dashes.
fn metadata_headers(metadata: &[(String, String)]) -> Result<Headers, Error> {
    metadata
        .iter()
        .map(|(k, v)| {
            let fits = !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !fits || !v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                return Err(Error::invalid_config(format!(
                    "metadata {k:?}: keys must be lowercase letters, digits and dashes, values printable ASCII"
                )));
            }
            Ok(header(&format!("{META_PREFIX}{}", k.replace('-', "_")), v.clone()))
        })
        .collect()
}

fn metadata_of(response: &Response) -> Vec<(String, String)> {
    response
        .headers
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(META_PREFIX).map(|name| (name.replace('_', "-"), v.clone())))
        .collect()
}

fn meta_of(key: &str, response: &Response) -> ObjectMeta {
    let size = response.header("content-length").and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    let mut meta = ObjectMeta::new(key, size, response.header("etag").map(bare_etag).unwrap_or_default());
    meta.modified_ms = response.header("last-modified").and_then(http_date_ms);
    meta.metadata = metadata_of(response);
    meta
}

fn http_date_ms(date: &str) -> Option<u64> {
    let t = httpdate::parse_http_date(date.trim()).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64)
}

impl Abs {
    /// Send a request to an encoded `path`, dated, versioned and signed.
    fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        headers: Headers,
        body: &[u8],
    ) -> Result<Response, Error> {
        self.request(method, path, query, headers, body)?.send()
    }

    /// The request, dated and signed.
    fn request<'a>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        mut headers: Headers,
        body: &'a [u8],
    ) -> Result<Request<'a>, Error> {
        headers.push(header("x-ms-date", httpdate::fmt_http_date(SystemTime::now())));
        headers.push(header("x-ms-version", API_VERSION));
        if matches!(method, Method::Put | Method::Post) || !body.is_empty() {
            headers.push(header("content-length", body.len().to_string()));
        }
        if let Credential::SharedKey(key) = &self.at.credential {
            let to_sign = sign::string_to_sign(method.as_str(), &headers, &self.at.account, path, query);
            headers.push(header("authorization", sign::authorization(&self.at.account, key, &to_sign)?));
        }
        let mut request = Request::new(method, self.at.url(path, query));
        for (k, v) in headers {
            request = request.header(k, v);
        }
        Ok(request.body(body))
    }

    /// The contract's error for a failed call on `what` (a key or the
    /// container), by Azure's error code where it has a meaning of its own.
    fn error(&self, op: &str, what: &str, response: &Response, precondition: &Precondition) -> Error {
        let code = response
            .header("x-ms-error-code")
            .map(str::to_string)
            .or_else(|| listing::error(&response.body).map(|(code, _)| code));
        let at = format!("{}/{} in storage account {}", self.at.container, self.at.blob_name(what), self.at.account);
        match code.as_deref() {
            Some("ContainerNotFound") => Error::invalid_config(format!(
                "container `{}` does not exist in storage account `{}`: create it first (sluice does not create containers)",
                self.at.container, self.at.account
            )),
            Some(
                "AuthenticationFailed"
                | "AuthorizationFailure"
                | "AuthorizationPermissionMismatch"
                | "InvalidAuthenticationInfo",
            ) => Error::access_denied(format!(
                "{op} {at}: Azure refused the credentials ({}): check account-name and account-key or sas-token",
                code.unwrap_or_default()
            )),
            Some("BlobNotFound") if matches!(precondition, Precondition::IfMatch(_)) => {
                Error::precondition_failed(format!("{op} {at}: the blob to replace is gone"))
            }
            Some("BlobArchived") => Error::permanent(format!(
                "{op} {at}: the blob is in the archive tier (a lifecycle policy?); rehydrate it, and keep the replica's path out of archiving"
            )),
            // A 409 that is not a lost race (a lease or legal hold on the
            // blob, snapshots present): for an operator, not a retry.
            Some(other) if response.status == 409 && other != "BlobAlreadyExists" => {
                Error::permanent(format!("{op} {at}: Azure refused it ({other}): {}", response.text().trim()))
            }
            _ => status_error(&format!("{op} {at}"), response),
        }
    }

    fn blob_call(
        &self,
        method: Method,
        key: &str,
        query: &[(&str, String)],
        headers: Headers,
        body: &[u8],
    ) -> Result<Response, Error> {
        self.send(method, &self.at.blob_path(key), query, headers, body)
    }
}

/// The settings this plugin reads (Litestream's Azure keys).
fn settings() -> [Setting; 5] {
    [
        Setting::new("account-name", "storage account, when the URL does not name it"),
        Setting::new("account-key", "shared key (base64); else LITESTREAM_AZURE_ACCOUNT_KEY").secret(),
        Setting::new("sas-token", "shared access signature, instead of a key").secret(),
        Setting::new("bucket", "container, when the URL does not name it"),
        Setting::new(
            "endpoint",
            "blob endpoint (Azurite, sovereign clouds); else https://ACCOUNT.blob.core.windows.net",
        ),
    ]
}

impl Backend for Abs {
    fn info() -> PluginInfo {
        PluginInfo {
            capabilities: Capabilities {
                conditional_writes: true,
                ranged_reads: true,
                multipart_upload: true,
                max_object_size: Some(MAX_PART_SIZE * MAX_PARTS as u64),
                max_put_size: MAX_PUT_SIZE,
                min_part_size: MIN_PART_SIZE,
                max_part_size: MAX_PART_SIZE,
                max_parts: MAX_PARTS,
                max_delete_batch: MAX_BATCH,
                max_list_page: MAX_BATCH,
            },
            ..PluginInfo::basic(
                "abs",
                env!("CARGO_PKG_VERSION"),
                "Azure Blob Storage (abs://[account@]container/path; account-key or sas-token)",
                &["abs"],
            )
            .with_settings(settings())
        }
    }

    fn open(config: Config) -> Result<Self, Error> {
        Ok(Abs { at: Location::from_config(&config)? })
    }

    fn put(&self, key: &str, data: Vec<u8>, options: PutOptions) -> Result<ObjectMeta, Error> {
        let mut headers = vec![
            header("x-ms-blob-type", "BlockBlob"),
            header("content-type", "application/octet-stream"),
            header("content-md5", md5_base64(&data)),
        ];
        headers.extend(precondition_headers(&options.precondition));
        headers.extend(metadata_headers(&options.metadata)?);
        let r = self.blob_call(Method::Put, key, &[], headers, &data)?;
        if r.status != 201 {
            return Err(self.error("put", key, &r, &options.precondition));
        }
        let mut meta = ObjectMeta::new(key, data.len() as u64, r.header("etag").map(bare_etag).unwrap_or_default());
        meta.modified_ms = r.header("last-modified").and_then(http_date_ms);
        meta.metadata = options.metadata;
        Ok(meta)
    }

    fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Vec<u8>, Error> {
        let mut headers = Vec::new();
        if let Some(r) = range.filter(|r| r.length > 0) {
            let last = r.offset.saturating_add(r.length - 1);
            headers.push(header("x-ms-range", format!("bytes={}-{last}", r.offset)));
        }
        let r = self.request(Method::Get, &self.at.blob_path(key), &[], headers, &[])?.send_streaming()?;
        match r.status {
            // 200: the range was ignored; only the range is read.
            200 | 206 => r.read_range(range),
            // A range that starts at or past the end selects nothing.
            416 => Ok(Vec::new()),
            _ => Err(self.error("get", key, &r.into_response()?, &Precondition::None)),
        }
    }

    fn head(&self, key: &str) -> Result<ObjectMeta, Error> {
        let r = self.blob_call(Method::Head, key, &[], Vec::new(), &[])?;
        if r.status != 200 {
            return Err(self.error("head", key, &r, &Precondition::None));
        }
        Ok(meta_of(key, &r))
    }

    fn list(&self, prefix: &str, cursor: Option<String>, max_keys: u32) -> Result<ListPage, Error> {
        let mut query = vec![
            ("restype", "container".to_string()),
            ("comp", "list".to_string()),
            ("prefix", self.at.blob_name(prefix)),
            ("maxresults", max_keys.clamp(1, MAX_BATCH).to_string()),
        ];
        if let Some(marker) = cursor {
            query.push(("marker", marker));
        }
        let r = self.send(Method::Get, &self.at.container_path(), &query, Vec::new(), &[])?;
        if r.status != 200 {
            return Err(self.error("list", prefix, &r, &Precondition::None));
        }
        let (blobs, next_cursor) = listing::parse(&r.body)
            .map_err(|e| Error::transient(format!("list {prefix:?}: unreadable answer: {e}")))?;
        let objects = blobs
            .into_iter()
            .filter_map(|b| {
                let key = self.at.key_of(&b.name)?;
                let mut meta = ObjectMeta::new(key, b.size, b.etag);
                meta.modified_ms = b.last_modified.as_deref().and_then(http_date_ms);
                Some(meta)
            })
            .collect();
        Ok(ListPage { objects, next_cursor })
    }

    fn delete(&self, keys: Vec<String>) -> Result<Vec<DeleteFailure>, Error> {
        check_delete_batch(keys.len(), MAX_BATCH)?;
        let mut failures = Vec::new();
        for key in keys {
            let r = self.blob_call(Method::Delete, &key, &[], Vec::new(), &[])?;
            let gone = r.status == 202 || (r.status == 404 && r.header("x-ms-error-code") != Some("ContainerNotFound"));
            if !gone {
                let error = self.error("delete", &key, &r, &Precondition::None);
                failures.push(DeleteFailure { key, error });
            }
        }
        Ok(failures)
    }

    fn create_upload(&self, _key: &str, options: PutOptions) -> Result<String, Error> {
        // Checked now, so bad metadata fails before any block is sent.
        metadata_headers(&options.metadata)?;
        Ok(Upload::new(random_u64(), &options).encode())
    }

    fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        data: Vec<u8>,
        _content_sha256: Option<Vec<u8>>,
    ) -> Result<UploadedPart, Error> {
        let block_id = block_id(&Upload::decode(upload_id)?, part_number);
        let query = [("comp", "block".to_string()), ("blockid", block_id.clone())];
        let headers = vec![header("content-md5", md5_base64(&data))];
        let r = self.blob_call(Method::Put, key, &query, headers, &data)?;
        if r.status != 201 {
            return Err(self.error("put block", key, &r, &Precondition::None));
        }
        Ok(UploadedPart { part_number, etag: block_id })
    }

    fn complete_upload(&self, key: &str, upload_id: &str, parts: Vec<UploadedPart>) -> Result<ObjectMeta, Error> {
        let upload = Upload::decode(upload_id)?;
        let mut body = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
        for part in &parts {
            body.push_str(&format!("<Latest>{}</Latest>", block_id(&upload, part.part_number)));
        }
        body.push_str("</BlockList>");
        let mut headers = vec![
            header("content-type", "application/xml"),
            header("content-md5", md5_base64(body.as_bytes())),
            header("x-ms-blob-content-type", "application/octet-stream"),
        ];
        headers.extend(precondition_headers(&upload.precondition));
        headers.extend(metadata_headers(&upload.metadata)?);
        let query = [("comp", "blocklist".to_string())];
        let r = self.blob_call(Method::Put, key, &query, headers, body.as_bytes())?;
        if r.status != 201 {
            return Err(self.error("put block list", key, &r, &upload.precondition));
        }
        self.head(key)
    }

    fn abort_upload(&self, _key: &str, _upload_id: &str) -> Result<(), Error> {
        // Uncommitted blocks cannot be deleted one by one: Azure drops them
        // a week after their last write, or at once when another block list
        // is committed to the blob. Nothing to free.
        Ok(())
    }
}

export_backend!(Abs);
