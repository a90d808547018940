//! Signed S3 requests over the SDK's `wasi:http` client.

use crate::errors::{self, Context};
use crate::sign::{Signer, UNSIGNED_PAYLOAD};
use crate::url::Location;
use sha2::{Digest, Sha256};
use sluice_sdk::Error;
use sluice_sdk::http::{Method, Request, Response, StreamingResponse};

/// SHA-256 of the empty body, precomputed: most S3 requests have no body.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

pub struct Client {
    pub loc: Location,
    pub access_key_id: String,
    signer: Signer,
    sign_payload: bool,
}

/// One request, before signing.
pub struct Req<'a> {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: &'a [u8],
    /// The body's SHA-256 when the host already computed it.
    sha256: Option<&'a [u8]>,
}

impl<'a> Req<'a> {
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }
    pub fn headers(mut self, headers: impl IntoIterator<Item = (String, String)>) -> Self {
        self.headers.extend(headers);
        self
    }
    pub fn body(mut self, body: &'a [u8], sha256: Option<&'a [u8]>) -> Self {
        self.body = body;
        self.sha256 = sha256;
        self
    }
}

fn with_query(mut url: String, query: &[(&str, &str)]) -> String {
    for (i, (k, v)) in query.iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str(&crate::encode::uri_encode(k, false));
        if !v.is_empty() {
            url.push('=');
            url.push_str(&crate::encode::uri_encode(v, false));
        }
    }
    url
}

impl Client {
    pub fn new(
        loc: Location,
        access_key_id: &str,
        secret: &str,
        session_token: Option<&str>,
        sign_payload: bool,
    ) -> Self {
        let signer = Signer::new(access_key_id, secret, session_token, &loc.region);
        Client {
            loc,
            access_key_id: access_key_id.to_string(),
            signer,
            sign_payload,
        }
    }

    /// The key as stored: the replica prefix plus the contract's key.
    pub fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.loc.prefix)
    }

    /// A request on an object (`full_key` includes the prefix).
    pub fn object(&self, method: Method, full_key: &str, query: &[(&str, &str)]) -> Req<'static> {
        Req {
            method,
            url: with_query(self.loc.object_url(full_key), query),
            headers: Vec::new(),
            body: &[],
            sha256: None,
        }
    }

    /// A request on the bucket (list, batch delete).
    pub fn bucket(&self, method: Method, query: &[(&str, &str)]) -> Req<'static> {
        Req {
            method,
            url: with_query(self.loc.bucket_url(), query),
            headers: Vec::new(),
            body: &[],
            sha256: None,
        }
    }

    /// Sign and send. Only transport failures are errors here; the caller
    /// decides what an HTTP status means for its operation.
    pub fn send(&self, req: Req<'_>) -> Result<Response, Error> {
        self.signed(req)?.send()
    }

    /// [`Client::send`], returning once the headers are in (the body is
    /// read as it arrives).
    pub fn send_streaming(&self, req: Req<'_>) -> Result<StreamingResponse, Error> {
        self.signed(req)?.send_streaming()
    }

    /// The request, signed.
    fn signed<'a>(&self, req: Req<'a>) -> Result<Request<'a>, Error> {
        let payload_hash = if !self.sign_payload {
            UNSIGNED_PAYLOAD.to_string()
        } else if let Some(sha) = req.sha256.filter(|s| s.len() == 32) {
            hex::encode(sha)
        } else if req.body.is_empty() {
            EMPTY_SHA256.to_string()
        } else {
            hex::encode(Sha256::digest(req.body))
        };
        let signed = self
            .signer
            .sign(req.method.as_str(), &req.url, &req.headers, &payload_hash)?;
        let mut request = Request::new(req.method, req.url.as_str()).body(req.body);
        for (k, v) in req.headers.iter().chain(&signed) {
            request = request.header(k.as_str(), v.as_str());
        }
        Ok(request)
    }

    /// The contract error for a failed answer.
    pub fn error(&self, response: &Response, op: &str, target: &str) -> Error {
        let ctx = self.context(op, target);
        let err = errors::from_response(response.status, &response.headers, &response.body, &ctx);
        if !matches!(err, Error::NotFound(_)) {
            sluice_sdk::debug!("s3 {op} {target:?}: HTTP {}", response.status);
        }
        err
    }

    pub fn context<'a>(&'a self, op: &'a str, target: &'a str) -> Context<'a> {
        Context {
            op,
            target,
            bucket: &self.loc.bucket,
            access_key_id: &self.access_key_id,
        }
    }
}

/// Whether an answer is a success.
pub fn ok(response: &Response) -> bool {
    (200..300).contains(&response.status)
}
