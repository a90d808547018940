//! A small blocking HTTP client over standard `wasi:http`, so no plugin
//! hand-rolls the stream plumbing. The host carries the requests (with
//! connection reuse) and enforces the plugin's network allowlist.

use crate::{ByteRange, Error};
use std::io::Read;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingBody, Method as WasiMethod, OutgoingBody, OutgoingRequest,
    RequestOptions, Scheme,
};
use wasip2::io::streams::{InputStream, StreamError};

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
        self.send_streaming()?.into_response()
    }

    /// Send, and return once the response's status and headers are in:
    /// the body is read as it arrives ([`StreamingResponse`]), so a large
    /// one need not be held whole, and one the caller does not want (a
    /// whole object from a server that ignored a `Range`) need not be
    /// read at all. Errors as for [`Request::send`].
    pub fn send_streaming(self) -> Result<StreamingResponse, Error> {
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
        receive(future, parts.authority, self.method)
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

/// Wait for the response's status and headers.
fn receive(future: FutureIncomingResponse, authority: &str, method: Method) -> Result<StreamingResponse, Error> {
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(code))) => return Err(map_error_code(code, authority)),
        Some(Err(())) => return Err(Error::permanent("response already taken")),
        None => return Err(Error::transient("response not ready after waiting for it")),
    };
    let status = response.status();
    let headers: Vec<(String, String)> = response
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let incoming = response.consume().map_err(|()| Error::permanent("response body already taken"))?;
    let stream = incoming.stream().map_err(|()| Error::permanent("response stream already taken"))?;
    // A HEAD's or a 204's content-length describes no body of its own.
    let has_body = method != Method::Head && !matches!(status, 204 | 304);
    let length = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.trim().parse().ok());
    let body = BodyReader {
        stream: Some(stream),
        incoming: Some(incoming),
        authority: authority.to_string(),
        expected: length.filter(|_| has_body),
        received: 0,
        failed: None,
    };
    Ok(StreamingResponse { status, headers, body })
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

/// A response whose body has not been read yet.
#[derive(Debug)]
pub struct StreamingResponse {
    /// HTTP status code.
    pub status: u16,
    /// Headers, names in lowercase.
    pub headers: Vec<(String, String)>,
    body: BodyReader,
}

impl StreamingResponse {
    /// The first value of a header (name is case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body, to read as it arrives ([`std::io::Read`]; a broken
    /// connection is an `io::Error` whose message names the server).
    pub fn body(&mut self) -> &mut BodyReader {
        &mut self.body
    }

    /// Read the rest of the body into a [`Response`].
    pub fn into_response(mut self) -> Result<Response, Error> {
        let mut body = Vec::with_capacity(self.body.expected.unwrap_or(0).min(READ_CHUNK) as usize);
        self.body.read_to_end(&mut body).map_err(|e| read_error(e, &self.body.authority))?;
        Ok(Response { status: self.status, headers: self.headers, body })
    }

    /// The bytes of `range` (all of them for `None`) from the answer to a
    /// GET that asked for it: a 206's body is the range; a 200's is the
    /// whole object (a server that ignores `Range`), of which only the
    /// range is read, and the rest left unread, so memory stays at the
    /// range's size whatever the object's. Other statuses are the
    /// caller's to map before this.
    pub fn read_range(mut self, range: Option<ByteRange>) -> Result<Vec<u8>, Error> {
        let Some(range) = range else { return self.into_response().map(|r| r.body) };
        let partial = self.status == 206;
        if partial && range.length > 0 {
            // A 206 for another range than asked would be read as ours.
            let start = self.header("content-range").and_then(range_start);
            if start.is_some_and(|s| s != range.offset) {
                let shown = self.header("content-range").unwrap_or_default();
                return Err(Error::transient(format!(
                    "{} answered a read from byte {} with `content-range: {shown}`",
                    self.body.authority, range.offset
                )));
            }
        }
        let hint = self.body.expected;
        range_of(&mut self.body, partial, range, hint).map_err(|e| read_error(e, &self.body.authority))
    }
}

/// A response body as it arrives, read with [`std::io::Read`]; what is
/// left unread when it is dropped is abandoned with the connection.
#[derive(Debug)]
pub struct BodyReader {
    /// `None` once the body ended (the stream must go before its body).
    stream: Option<InputStream>,
    incoming: Option<IncomingBody>,
    authority: String,
    /// The content-length announced, if any: a body that ends short of it
    /// was cut, and is an error rather than a short object.
    expected: Option<u64>,
    received: u64,
    /// Why the body broke: said again to any later read, never an end.
    failed: Option<String>,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(why) = &self.failed {
            return Err(std::io::Error::other(why.clone()));
        }
        let Some(stream) = &self.stream else { return Ok(0) };
        if buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(READ_CHUNK);
        loop {
            match stream.blocking_read(want) {
                // An empty read is not the end (that is `Closed`): 0 here
                // would pass for it and cut the body short.
                Ok(chunk) if chunk.is_empty() => continue,
                Ok(chunk) => {
                    buf[..chunk.len()].copy_from_slice(&chunk);
                    self.received += chunk.len() as u64;
                    return Ok(chunk.len());
                }
                Err(StreamError::Closed) => {
                    self.finish();
                    if let Some(expected) = self.expected.filter(|&e| self.received < e) {
                        let why =
                            format!("{} closed the body after {} of {expected} bytes", self.authority, self.received);
                        self.failed = Some(why.clone());
                        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, why));
                    }
                    return Ok(0);
                }
                Err(e) => {
                    let why = stream_error(e, &self.authority).to_string();
                    self.failed = Some(why.clone());
                    return Err(std::io::Error::other(why));
                }
            }
        }
    }
}

impl BodyReader {
    fn finish(&mut self) {
        self.stream = None;
        if let Some(incoming) = self.incoming.take() {
            drop(IncomingBody::finish(incoming));
        }
    }
}

impl Drop for BodyReader {
    fn drop(&mut self) {
        // The stream is a child of the body: it goes first.
        self.stream = None;
        self.incoming = None;
    }
}

/// The first byte of a `content-range: bytes a-b/total`.
fn range_start(value: &str) -> Option<u64> {
    let spec = value.trim().strip_prefix("bytes")?.trim_start();
    spec.split_once('-')?.0.trim().parse().ok()
}

/// The bytes of `range` from `body`: the range itself if `partial` (a
/// 206), else the whole object (a 200), of which `range.offset` bytes are
/// skipped and only `range.length` read. `size_hint` (the body's
/// content-length) sizes the buffer once.
fn range_of(body: &mut impl Read, partial: bool, range: ByteRange, size_hint: Option<u64>) -> std::io::Result<Vec<u8>> {
    if range.length == 0 {
        return Ok(Vec::new());
    }
    if !partial {
        // Skipped in large reads: each is a call out of the sandbox.
        let (mut skip, mut scratch) = (range.offset, vec![0u8; READ_CHUNK as usize]);
        while skip > 0 {
            let n = body.read(&mut scratch[..skip.min(READ_CHUNK) as usize])?;
            if n == 0 {
                return Ok(Vec::new());
            }
            skip -= n as u64;
        }
    }
    let mut out = Vec::with_capacity(range.length.min(size_hint.unwrap_or(0)) as usize);
    body.take(range.length).read_to_end(&mut out)?;
    Ok(out)
}

fn read_error(e: std::io::Error, authority: &str) -> Error {
    Error::transient(format!("reading the response from {authority} failed: {e}"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn range(offset: u64, length: u64) -> ByteRange {
        ByteRange { offset, length }
    }

    #[test]
    fn a_partial_body_is_the_range_and_a_whole_one_is_cut_without_reading_past_it() {
        let object: Vec<u8> = (0..100u8).collect();
        let mut partial = Cursor::new(object[10..20].to_vec());
        assert_eq!(range_of(&mut partial, true, range(10, 10), Some(10)).unwrap(), &object[10..20]);
        let mut whole = Cursor::new(object.clone());
        assert_eq!(range_of(&mut whole, false, range(10, 10), Some(100)).unwrap(), &object[10..20]);
        assert_eq!(whole.position(), 20, "read past the range");
        let mut whole = Cursor::new(object.clone());
        assert_eq!(range_of(&mut whole, false, range(95, 10), None).unwrap(), &object[95..]);
        let mut whole = Cursor::new(object.clone());
        assert!(range_of(&mut whole, false, range(200, 10), None).unwrap().is_empty());
        let mut whole = Cursor::new(object);
        assert!(range_of(&mut whole, false, range(50, 0), None).unwrap().is_empty());
        assert_eq!(whole.position(), 0, "an empty range reads nothing");
    }

    #[test]
    fn the_start_of_a_content_range_is_read() {
        assert_eq!(range_start("bytes 10-19/100"), Some(10));
        assert_eq!(range_start("bytes 0-0/*"), Some(0));
        assert_eq!(range_start("bytes */100"), None);
        assert_eq!(range_start("items 1-2/3"), None);
    }

    #[test]
    fn a_server_sending_more_than_the_range_is_read_no_further() {
        // A 206 whose body runs past the range (a broken server) is cut
        // at the range's length, not read whole.
        let mut partial = Cursor::new(vec![7u8; 1000]);
        assert_eq!(range_of(&mut partial, true, range(0, 10), Some(1000)).unwrap().len(), 10);
        assert_eq!(partial.position(), 10);
    }
}
