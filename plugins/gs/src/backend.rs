//! The store's operations as GCS JSON API calls (see the crate docs).

use crate::auth::{self, Credential};
use crate::listing::{self, Object};
use crate::location::Location;
use crate::upload::{Parts, Target, Upload};
use crate::{MAX_BATCH, MAX_PART_SIZE, MAX_PARTS, MAX_PUT_SIZE, MIN_PART_SIZE};
use sluice_sdk::http::{Method, Request, Response, status_error};
use sluice_sdk::*;
use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// What a 404 means for a call: object calls miss an object; uploads and
/// listings name only the bucket, so theirs is a missing bucket.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Missing {
    Object,
    Bucket,
}

struct Gs {
    at: Location,
    /// The access token, fetched on the first call and again before it
    /// expires (a warm instance can outlive it; see the crate docs).
    token: RefCell<auth::TokenCache>,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The host's randomness (`wasi:random`) for the signature's blinding.
struct HostRng;

impl rand_core::RngCore for HostRng {
    fn next_u32(&mut self) -> u32 {
        random_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        random_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            chunk.copy_from_slice(&random_u64().to_le_bytes()[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for HostRng {}

fn meta_of(key: &str, object: &Object) -> ObjectMeta {
    let mut meta = ObjectMeta::new(key, object.size(), object.etag());
    meta.modified_ms = object.modified_ms();
    meta.metadata = object.metadata();
    meta
}

/// `ifGenerationMatch`: 0 is "no live object", else the generation the
/// caller saw (its ETag).
fn precondition_query(precondition: &Precondition) -> Result<Vec<(&'static str, String)>, Error> {
    Ok(match precondition {
        Precondition::None => Vec::new(),
        Precondition::IfAbsent => vec![("ifGenerationMatch", "0".to_string())],
        Precondition::IfMatch(etag) => {
            if etag.is_empty() || !etag.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Error::precondition_failed(format!(
                    "ETag {etag:?} is not a GCS generation: the object changed or was not written by this plugin"
                )));
            }
            vec![("ifGenerationMatch", etag.clone())]
        }
    })
}

/// Custom metadata as the resource's `metadata` map.
fn metadata_json(metadata: &[(String, String)]) -> serde_json::Value {
    serde_json::Value::Object(metadata.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str()))).collect())
}

fn parse_object(what: &str, response: &Response) -> Result<Object, Error> {
    listing::object(&response.body).map_err(|e| Error::transient(format!("{what}: unreadable answer: {e}")))
}

impl Gs {
    /// `Authorization: Bearer ...`, fetching the token on first use;
    /// `None` without credentials (an emulator or another endpoint named
    /// by the replica; Google's own always gets some, the VM's at last).
    fn authorization(&self) -> Result<Option<String>, Error> {
        let Some(credential) = &self.at.credential else { return Ok(None) };
        let now = now_secs();
        if let Some(bearer) = self.token.borrow().fresh(now) {
            return Ok(Some(bearer.to_string()));
        }
        let (token, lifetime) = fetch_token(credential, now)?;
        Ok(Some(self.token.borrow_mut().store(&token, lifetime, now)))
    }

    /// Send a request to an encoded `path`, authorized. A request Google
    /// calls idempotent (reads and deletes, and writes guarded by
    /// `ifGenerationMatch`: its retry strategy) is sent again, once and at
    /// once, when the connection failed before an answer: the usual cause
    /// is a pooled connection the server had closed (fake-gcs-server
    /// closes one after every 416 without saying so). Other failures are
    /// the host's to retry, with its back-off.
    fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<Response, Error> {
        self.call(method, path, query, headers, body, |r| r.send())
    }

    /// Authorize and send with `go` (`Request::send` or
    /// `send_streaming`), once more after a transient failure of an
    /// idempotent call.
    fn call<'b, T>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        headers: &[(&str, String)],
        body: &'b [u8],
        go: impl Fn(Request<'b>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let idempotent = method != Method::Post || query.iter().any(|(k, _)| *k == "ifGenerationMatch");
        let send = || -> Result<T, Error> {
            let mut request = Request::new(method, self.at.url(path, query));
            if let Some(authorization) = self.authorization()? {
                request = request.header("authorization", authorization);
            }
            for (k, v) in headers {
                request = request.header(*k, v.clone());
            }
            go(request.body(body))
        };
        match send() {
            Err(e) if idempotent && matches!(e, Error::Transient(_)) => {
                debug!("gs: {} {path}: {}; sending it again", method.as_str(), e.message());
                send()
            }
            other => other,
        }
    }

    /// The contract's error for a failed call `op` on object `name`.
    fn error(&self, op: &str, name: &str, response: &Response, missing: Missing) -> Error {
        let message = listing::error_message(&response.body).unwrap_or_default();
        let at = format!("{op} gs://{}/{name}", self.at.bucket);
        let bucket_said = message.contains("bucket") && message.contains("not exist");
        match response.status {
            401 | 403 => {
                let who = match &self.at.credential {
                    Some(c) => format!("the credentials of {}", c.describe()),
                    None => "a request without credentials (none were found)".to_string(),
                };
                let said = if message.is_empty() { String::new() } else { format!(": {message}") };
                Error::access_denied(format!(
                    "{at}: Google refused {who} (HTTP {}{said}): check GOOGLE_APPLICATION_CREDENTIALS, credentials-file or credentials-json, and the account's roles on the bucket",
                    response.status
                ))
            }
            404 if missing == Missing::Bucket || bucket_said => Error::invalid_config(format!(
                "bucket `{}` does not exist: create it first (sluice does not create buckets)",
                self.at.bucket
            )),
            404 => Error::not_found(format!("{at}: no such object")),
            412 => Error::precondition_failed(format!("{at}: the object's generation is not the expected one")),
            _ => status_error(&at, response),
        }
    }

    /// Upload `data` as object `name` in one `multipart/related` request
    /// (the JSON resource, then the bytes).
    fn upload(&self, name: &str, data: &[u8], options: &PutOptions) -> Result<Object, Error> {
        let boundary = format!("sluice-{:016x}{:016x}", random_u64(), random_u64());
        let mut resource = serde_json::json!({"name": name, "contentType": "application/octet-stream"});
        if !options.metadata.is_empty() {
            resource["metadata"] = metadata_json(&options.metadata);
        }
        let head = format!(
            "--{boundary}\r\ncontent-type: application/json; charset=UTF-8\r\n\r\n{resource}\r\n--{boundary}\r\ncontent-type: application/octet-stream\r\n\r\n"
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        let mut body = Vec::with_capacity(head.len() + data.len() + tail.len());
        body.extend_from_slice(head.as_bytes());
        body.extend_from_slice(data);
        body.extend_from_slice(tail.as_bytes());
        let mut query = vec![("uploadType", "multipart".to_string())];
        query.extend(precondition_query(&options.precondition)?);
        let content_type = [("content-type", format!("multipart/related; boundary={boundary}"))];
        let r = self.send(Method::Post, &self.at.upload_path(), &query, &content_type, &body)?;
        if r.status != 200 {
            return Err(self.error("put", name, &r, Missing::Bucket));
        }
        parse_object(&format!("put {name}"), &r)
    }

    /// Object names below `dir` (a full name prefix), all pages.
    fn names_below(&self, dir: &str) -> Result<Vec<String>, Error> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("prefix", dir.to_string()), ("fields", "items(name),nextPageToken".to_string())];
            query.extend(token.take().map(|t| ("pageToken", t)));
            let r = self.send(Method::Get, &self.at.objects_path(), &query, &[], &[])?;
            if r.status != 200 {
                return Err(self.error("list", dir, &r, Missing::Bucket));
            }
            let (objects, next) =
                listing::page(&r.body).map_err(|e| Error::transient(format!("list {dir}: unreadable answer: {e}")))?;
            names.extend(objects.into_iter().map(|o| o.name));
            match next {
                Some(t) => token = Some(t),
                None => return Ok(names),
            }
        }
    }

    /// Delete one object by full name; a missing one counts as deleted.
    fn delete_name(&self, name: &str) -> Result<(), Error> {
        let r = self.send(Method::Delete, &self.at.object_path(name), &[], &[], &[])?;
        match r.status {
            200 | 204 => Ok(()),
            404 if !listing::error_message(&r.body).is_some_and(|m| m.contains("bucket")) => Ok(()),
            _ => Err(self.error("delete", name, &r, Missing::Object)),
        }
    }

    /// Delete an upload's temporaries.
    fn clean_up(&self, upload: &Upload) -> Result<(), Error> {
        for name in self.names_below(&upload.temp_dir(&self.at.prefix))? {
            self.delete_name(&name)?;
        }
        Ok(())
    }

    /// One compose of `sources` (name, generation) into `target`.
    fn compose(
        &self,
        target: &str,
        sources: &[(String, Option<String>)],
        options: &PutOptions,
    ) -> Result<Object, Error> {
        let sources: Vec<serde_json::Value> = sources
            .iter()
            .map(|(name, generation)| match generation {
                Some(g) => serde_json::json!({"name": name, "generation": g}),
                None => serde_json::json!({"name": name}),
            })
            .collect();
        let mut destination = serde_json::json!({"contentType": "application/octet-stream"});
        if !options.metadata.is_empty() {
            destination["metadata"] = metadata_json(&options.metadata);
        }
        let body = serde_json::json!({"sourceObjects": sources, "destination": destination}).to_string();
        let query = precondition_query(&options.precondition)?;
        let path = format!("{}/compose", self.at.object_path(target));
        let headers = [("content-type", "application/json".to_string())];
        let r = self.send(Method::Post, &path, &query, &headers, body.as_bytes())?;
        if r.status != 200 {
            return Err(self.error("compose", target, &r, Missing::Object));
        }
        parse_object(&format!("compose {target}"), &r)
    }

    /// Run the compose chain of an upload; the final object's resource.
    fn assemble(&self, key: &str, upload: &Upload, parts: &[UploadedPart]) -> Result<Object, Error> {
        let prefix = &self.at.prefix;
        let generations: std::collections::HashMap<String, String> =
            parts.iter().map(|p| (upload.part_name(prefix, p.part_number), p.etag.clone())).collect();
        let names = parts.iter().map(|p| upload.part_name(prefix, p.part_number)).collect();
        let final_options = PutOptions {
            precondition: upload.precondition.clone(),
            metadata: upload.metadata.clone(),
            content_sha256: None,
        };
        let mut last = None;
        for step in upload.plan(prefix, names) {
            let sources: Vec<(String, Option<String>)> = step
                .sources
                .into_iter()
                .map(|name| {
                    let generation = generations.get(&name).cloned().or_else(|| last_generation(&last, &name));
                    (name, generation)
                })
                .collect();
            let object = match &step.target {
                Target::Temporary(name) => self.compose(name, &sources, &PutOptions::plain())?,
                Target::Final => self.compose(&self.at.object_name(key), &sources, &final_options)?,
            };
            last = Some(object);
        }
        last.ok_or_else(|| Error::invalid_config(format!("complete-upload of {key} with no parts")))
    }
}

/// The generation of the previous step's result, if `name` is it.
fn last_generation(last: &Option<Object>, name: &str) -> Option<String> {
    last.as_ref().filter(|o| o.name == name).and_then(|o| o.generation.clone())
}

/// Trade the credentials for an access token at their `token_uri`: the
/// token and its lifetime in seconds.
fn fetch_token(credential: &Credential, now: u64) -> Result<(String, u64), Error> {
    if let Credential::Metadata { .. } = credential {
        return metadata_token(credential);
    }
    let form = credential.token_request(now, &mut HostRng)?;
    let uri = &credential.token_uri();
    let r = Request::new(Method::Post, uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.as_bytes())
        .send()?;
    let who = credential.describe();
    match r.status {
        200 => auth::access_token(&r.body).map_err(|e| Error::transient(format!("token from {uri} for {who}: {e}"))),
        400 | 401 | 403 => Err(Error::access_denied(format!(
            "{uri} refused the credentials of {who} ({}): check GOOGLE_APPLICATION_CREDENTIALS, credentials-file or credentials-json",
            auth::token_error(&r.body).unwrap_or_else(|| format!("HTTP {}", r.status))
        ))),
        _ => Err(status_error(&format!("token from {uri} for {who}"), &r)),
    }
}

/// A token for the VM's service account from the metadata server. No
/// answer at all means no credentials anywhere: an operator's problem,
/// not one a retry heals.
fn metadata_token(credential: &Credential) -> Result<(String, u64), Error> {
    let uri = &credential.token_uri();
    let who = credential.describe();
    let r = Request::new(Method::Get, uri).header("metadata-flavor", "Google").send().map_err(|e| {
        // A name that does not resolve: not a Google VM, so no credentials
        // anywhere. Anything else may be a VM's passing hiccup.
        if e.to_string().contains("DnsError") {
            return Error::access_denied(format!(
                "no Google credentials: GOOGLE_APPLICATION_CREDENTIALS is unset, there is no gcloud application default \
                 credentials file, and there is no metadata server ({e}); set credentials-file, or run on GCE/GKE"
            ));
        }
        Error::transient(format!("the metadata server did not answer for a token ({e})"))
    })?;
    match r.status {
        200 => auth::access_token(&r.body).map_err(|e| Error::transient(format!("token from {uri} for {who}: {e}"))),
        403 | 404 => Err(Error::access_denied(format!(
            "{uri} has no token for {who} (HTTP {}): give the VM a service account with the storage scope, or set credentials-file",
            r.status
        ))),
        _ => Err(status_error(&format!("token from {uri} for {who}"), &r)),
    }
}

/// The settings this plugin reads. The host turns `credentials-file` and
/// GOOGLE_APPLICATION_CREDENTIALS into `credentials-json`.
fn settings() -> [Setting; 4] {
    [
        Setting::new("bucket", "bucket, when the URL does not name it"),
        Setting::new("endpoint", "JSON API endpoint (an emulator); else STORAGE_EMULATOR_HOST or Google"),
        Setting::new("credentials-json", "service account key or authorized user, as JSON").secret(),
        Setting::new(
            "metadata-host",
            "GCE metadata server for the VM's token when no key is found (sluice sets it: GCE_METADATA_HOST, else metadata.google.internal)",
        ),
    ]
}

impl Backend for Gs {
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
                "gs",
                env!("CARGO_PKG_VERSION"),
                "Google Cloud Storage (gs://bucket/path; service account key or application default credentials)",
                &["gs"],
            )
            .with_settings(settings())
        }
    }

    fn open(config: Config) -> Result<Self, Error> {
        Ok(Gs { at: Location::from_config(&config)?, token: RefCell::default() })
    }

    fn put(&self, key: &str, data: Vec<u8>, options: PutOptions) -> Result<ObjectMeta, Error> {
        let object = self.upload(&self.at.object_name(key), &data, &options)?;
        Ok(meta_of(key, &object))
    }

    fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Vec<u8>, Error> {
        let mut headers = Vec::new();
        if let Some(r) = range.filter(|r| r.length > 0) {
            let last = r.offset.saturating_add(r.length - 1);
            headers.push(("range", format!("bytes={}-{last}", r.offset)));
        }
        let name = self.at.object_name(key);
        let path = self.at.object_path(&name);
        let r = self.call(Method::Get, &path, &[("alt", "media".into())], &headers, &[], |r| r.send_streaming())?;
        match r.status {
            // 200: the range was ignored; only the range is read.
            200 | 206 => r.read_range(range),
            // A range that starts at or past the end selects nothing.
            416 => Ok(Vec::new()),
            _ => Err(self.error("get", &name, &r.into_response()?, Missing::Object)),
        }
    }

    fn head(&self, key: &str) -> Result<ObjectMeta, Error> {
        let name = self.at.object_name(key);
        let r = self.send(Method::Get, &self.at.object_path(&name), &[], &[], &[])?;
        if r.status != 200 {
            return Err(self.error("head", &name, &r, Missing::Object));
        }
        Ok(meta_of(key, &parse_object(&format!("head {name}"), &r)?))
    }

    fn list(&self, prefix: &str, cursor: Option<String>, max_keys: u32) -> Result<ListPage, Error> {
        let name = self.at.object_name(prefix);
        let mut query = vec![
            ("prefix", name.clone()),
            ("maxResults", max_keys.clamp(1, MAX_BATCH).to_string()),
            ("fields", "items(name,size,generation,updated,metadata),nextPageToken".to_string()),
        ];
        query.extend(cursor.map(|c| ("pageToken", c)));
        let r = self.send(Method::Get, &self.at.objects_path(), &query, &[], &[])?;
        if r.status != 200 {
            return Err(self.error("list", &name, &r, Missing::Bucket));
        }
        let (objects, next_cursor) =
            listing::page(&r.body).map_err(|e| Error::transient(format!("list {name}: unreadable answer: {e}")))?;
        let objects = objects.iter().filter_map(|o| Some(meta_of(self.at.key_of(&o.name)?, o))).collect();
        Ok(ListPage { objects, next_cursor })
    }

    fn delete(&self, keys: Vec<String>) -> Result<Vec<DeleteFailure>, Error> {
        check_delete_batch(keys.len(), MAX_BATCH)?;
        let mut failures = Vec::new();
        for key in keys {
            if let Err(error) = self.delete_name(&self.at.object_name(&key)) {
                failures.push(DeleteFailure { key, error });
            }
        }
        Ok(failures)
    }

    fn create_upload(&self, _key: &str, options: PutOptions) -> Result<String, Error> {
        // Checked now, so a malformed ETag fails before any part is sent.
        precondition_query(&options.precondition)?;
        Ok(Upload::new(random_u64(), &options).encode())
    }

    fn upload_part(
        &self,
        _key: &str,
        upload_id: &str,
        part_number: u32,
        data: Vec<u8>,
        _content_sha256: Option<Vec<u8>>,
    ) -> Result<UploadedPart, Error> {
        let name = Upload::decode(upload_id)?.part_name(&self.at.prefix, part_number);
        let query = [("uploadType", "media".to_string()), ("name", name.clone())];
        let headers = [("content-type", "application/octet-stream".to_string())];
        let r = self.send(Method::Post, &self.at.upload_path(), &query, &headers, &data)?;
        if r.status != 200 {
            return Err(self.error("upload part", &name, &r, Missing::Bucket));
        }
        let object = parse_object(&format!("upload part {name}"), &r)?;
        Ok(UploadedPart { part_number, etag: object.etag() })
    }

    fn complete_upload(&self, key: &str, upload_id: &str, parts: Vec<UploadedPart>) -> Result<ObjectMeta, Error> {
        let upload = Upload::decode(upload_id)?;
        match self.assemble(key, &upload, &parts) {
            Ok(object) => {
                // The object is whole: a temporary left behind is a cost,
                // not an error (listings never show it).
                if let Err(e) = self.clean_up(&upload) {
                    warn!("gs: completed {key}, but could not delete its upload's temporaries: {}", e.message());
                }
                Ok(meta_of(key, &object))
            }
            // The host retries a transient failure with the same parts;
            // any other failure ends the upload, and nothing aborts it.
            Err(e) if e.is_retryable() => Err(e),
            Err(e) => {
                if let Err(clean) = self.clean_up(&upload) {
                    warn!("gs: could not delete the temporaries of a failed upload of {key}: {}", clean.message());
                }
                Err(e)
            }
        }
    }

    fn abort_upload(&self, _key: &str, upload_id: &str) -> Result<(), Error> {
        self.clean_up(&Upload::decode(upload_id)?)
    }
}

export_backend!(Gs);
