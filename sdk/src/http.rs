//! A small blocking HTTP client over standard `wasi:http`, so no plugin
//! hand-rolls the stream plumbing. The host carries the requests (with
//! connection reuse) and enforces the plugin's network allowlist.

use crate::Error;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingBody, Method as WasiMethod, OutgoingBody, OutgoingRequest,
    RequestOptions, Scheme,
};
use wasip2::io::streams::StreamError;

/// How long to wait for a connection. Stores on the far side of the world
/// still connect within seconds; longer means the network is down.
const CONNECT_TIMEOUT_NS: u64 = 10_000_000_000;
/// How long to wait for a response to start: a large part upload is
/// acknowledged only after the store has it, so allow for slow links.
const FIRST_BYTE_TIMEOUT_NS: u64 = 120_000_000_000;
/// How long a response body may stall between chunks.
const BETWEEN_BYTES_TIMEOUT_NS: u64 = 60_000_000_000;
/// Read size for response bodies: large enough to keep calls few.
const READ_CHUNK: u64 = 256 * 1024;

/// HTTP methods: the common ones, and any other by name (`PROPFIND`,
/// `MKCOL`, `PROPPATCH` for WebDAV).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// PUT
    Put,
    /// POST
    Post,
    /// DELETE
    Delete,
    /// Any other method, by its name.
    Other(&'static str),
}

impl Method {
    /// The method's name on the wire (what request signing covers).
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            Method::Other(name) => name,
        }
    }
}

/// An outgoing request. The body is borrowed so large parts are not copied.
#[derive(Debug)]
pub struct Request<'a> {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: &'a [u8],
}

/// A complete response.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Headers, names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header (name is case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8, for error messages and XML parsing.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The contract's error for an HTTP error status, for stores whose
/// statuses mean what HTTP says (`what` names the operation and object):
/// 401/403 access denied, 404/410 not found, 409/412 precondition failed,
/// 408/5xx transient, 429 and 503 with `Retry-After` throttled, other 4xx
/// permanent. A store with its own error documents (S3's XML) maps those
/// first.
pub fn status_error(what: &str, response: &Response) -> Error {
    let body = response.text();
    let detail = body.trim().chars().take(300).collect::<String>();
    let msg = format!(
        "{what}: HTTP {}{}",
        response.status,
        if detail.is_empty() { String::new() } else { format!(": {detail}") }
    );
    let retry_after = response.header("retry-after").and_then(|v| v.trim().parse::<u64>().ok()).map(|s| s * 1000);
    match response.status {
        401 | 403 => Error::access_denied(msg),
        404 | 410 => Error::not_found(msg),
        409 | 412 => Error::precondition_failed(msg),
        429 => Error::throttled(msg, retry_after),
        503 if retry_after.is_some() => Error::throttled(msg, retry_after),
        408 | 500..=599 => Error::transient(msg),
        _ => Error::permanent(msg),
    }
}

/// The parts of an absolute `http(s)://authority/path?query` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlParts<'a> {
    /// `http` or `https`.
    pub scheme: &'a str,
    /// `host[:port]`.
    pub authority: &'a str,
    /// `/path?query`, at least `/`.
    pub path_and_query: &'a str,
}

/// Split an absolute URL without pulling in a URL crate.
pub fn split_url(url: &str) -> Result<UrlParts<'_>, Error> {
    let (scheme, rest) =
        url.split_once("://").ok_or_else(|| Error::invalid_config(format!("not an absolute URL: {url}")))?;
    if scheme != "http" && scheme != "https" {
        return Err(Error::invalid_config(format!("URL scheme must be http or https: {url}")));
    }
    let (authority, path_and_query) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], &rest[i..]),
        Some(_) => return Err(Error::invalid_config(format!("URL needs a path before its query: {url}"))),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(Error::invalid_config(format!("URL has no host: {url}")));
    }
    Ok(UrlParts { scheme, authority, path_and_query })
}

impl<'a> Request<'a> {
    /// A request with an empty body.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Request { method, url: url.into(), headers: Vec::new(), body: &[] }
    }

    /// Add a header. `host` is set by the runtime from the URL.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Set the body; `content-length` is added automatically.
    pub fn body(mut self, body: &'a [u8]) -> Self {
        self.body = body;
        self
    }

    /// Send and read the whole response. Connection failures and timeouts
    /// come back as `Error::Transient`; a destination the host refuses as
    /// `Error::AccessDenied`. HTTP error statuses are *not* errors here:
    /// the caller maps them, since only it knows what a 404 means.
    pub fn send(self) -> Result<Response, Error> {
        let parts = split_url(&self.url)?;
        let request = self.outgoing(&parts)?;
        let body = request.body().map_err(|()| Error::permanent("request body already taken"))?;
        // Hand the request over before writing the body: the host streams
        // it out as it arrives, so writing first would fill its buffer.
        let future = outgoing_handler::handle(request, Some(request_options()))
            .map_err(|e| map_error_code(e, parts.authority))?;
        if let Err(write_error) = write_body(body, self.body, parts.authority) {
            // A refused or failed request shows up first as a broken body
            // stream; the response future carries the real reason.
            future.subscribe().block();
            return Err(match future.get() {
                Some(Ok(Err(code))) => map_error_code(code, parts.authority),
                _ => write_error,
            });
        }
        receive(future, parts.authority)
    }

    /// The request without its body: method, URL and headers, with
    /// `content-length` added when a body is sent.
    fn outgoing(&self, parts: &UrlParts<'_>) -> Result<OutgoingRequest, Error> {
        let mut headers: Vec<(String, Vec<u8>)> =
            self.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec())).collect();
        let sends_body = !self.body.is_empty() || matches!(self.method, Method::Put | Method::Post);
        if sends_body && !headers.iter().any(|(k, _)| k == "content-length") {
            headers.push(("content-length".into(), self.body.len().to_string().into_bytes()));
        }
        let fields =
            Fields::from_list(&headers).map_err(|e| Error::invalid_config(format!("bad request header: {e:?}")))?;
        let request = OutgoingRequest::new(fields);
        let method = match self.method {
            Method::Get => WasiMethod::Get,
            Method::Head => WasiMethod::Head,
            Method::Put => WasiMethod::Put,
            Method::Post => WasiMethod::Post,
            Method::Delete => WasiMethod::Delete,
            Method::Other(name) => WasiMethod::Other(name.to_string()),
        };
        let scheme = if parts.scheme == "https" { Scheme::Https } else { Scheme::Http };
        // Without the query: it may carry a signature (an Azure SAS token).
        let shown = self.url.split('?').next().unwrap_or_default();
        let bad = |what: &str| Error::invalid_config(format!("bad {what} in URL {shown}"));
        request.set_method(&method).map_err(|()| bad("method"))?;
        request.set_scheme(Some(&scheme)).map_err(|()| bad("scheme"))?;
        request.set_authority(Some(parts.authority)).map_err(|()| bad("host"))?;
        request.set_path_with_query(Some(parts.path_and_query)).map_err(|()| bad("path"))?;
        Ok(request)
    }
}

/// The timeouts of every request.
fn request_options() -> RequestOptions {
    let options = RequestOptions::new();
    // Setting options can only fail if the host does not support them,
    // in which case its own defaults apply.
    let _ = options.set_connect_timeout(Some(CONNECT_TIMEOUT_NS));
    let _ = options.set_first_byte_timeout(Some(FIRST_BYTE_TIMEOUT_NS));
    let _ = options.set_between_bytes_timeout(Some(BETWEEN_BYTES_TIMEOUT_NS));
    options
}

/// Wait for the response and read it whole.
fn receive(future: FutureIncomingResponse, authority: &str) -> Result<Response, Error> {
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(code))) => return Err(map_error_code(code, authority)),
        Some(Err(())) => return Err(Error::permanent("response already taken")),
        None => return Err(Error::transient("response not ready after waiting for it")),
    };
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let incoming = response.consume().map_err(|()| Error::permanent("response body already taken"))?;
    let body = read_body(incoming, authority)?;
    Ok(Response { status, headers, body })
}

fn write_body(body: OutgoingBody, bytes: &[u8], authority: &str) -> Result<(), Error> {
    {
        let stream = body.write().map_err(|()| Error::permanent("body stream already taken"))?;
        let mut rest = bytes;
        while !rest.is_empty() {
            let room = stream.check_write().map_err(|e| stream_error(e, authority))?;
            if room == 0 {
                stream.subscribe().block();
                continue;
            }
            let n = rest.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            stream.write(&rest[..n]).map_err(|e| stream_error(e, authority))?;
            rest = &rest[n..];
        }
        // No flush after the last write: the host closes the stream once
        // content-length bytes arrived, and a flush would then fail.
    }
    OutgoingBody::finish(body, None).map_err(|e| map_error_code(e, authority))
}

fn read_body(incoming: IncomingBody, authority: &str) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    {
        let stream = incoming.stream().map_err(|()| Error::permanent("response stream already taken"))?;
        loop {
            match stream.blocking_read(READ_CHUNK) {
                Ok(chunk) => out.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(e) => return Err(stream_error(e, authority)),
            }
        }
    }
    drop(IncomingBody::finish(incoming));
    Ok(out)
}

fn stream_error(e: StreamError, authority: &str) -> Error {
    match e {
        StreamError::Closed => Error::transient(format!("connection to {authority} closed early")),
        StreamError::LastOperationFailed(err) => {
            Error::transient(format!("connection to {authority} failed: {}", err.to_debug_string()))
        }
    }
}

/// Map a `wasi:http` error code onto the contract: network trouble is
/// transient, a refused destination is access-denied, the rest permanent.
fn map_error_code(code: ErrorCode, authority: &str) -> Error {
    match code {
        ErrorCode::HttpRequestDenied => Error::access_denied(format!(
            "the host refused a request to {authority}: it is not on this replica's network allowlist"
        )),
        ErrorCode::DnsTimeout
        | ErrorCode::DnsError(_)
        | ErrorCode::DestinationNotFound
        | ErrorCode::DestinationUnavailable
        | ErrorCode::ConnectionRefused
        | ErrorCode::ConnectionTerminated
        | ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::ConnectionLimitReached
        | ErrorCode::HttpResponseIncomplete
        | ErrorCode::HttpResponseTimeout
        | ErrorCode::HttpProtocolError
        | ErrorCode::TlsProtocolError
        | ErrorCode::InternalError(_) => Error::transient(format!("request to {authority} failed: {code:?}")),
        other => Error::permanent(format!("request to {authority} failed: {other:?}")),
    }
}
