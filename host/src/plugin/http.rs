//! Carries a plugin's `wasi:http` requests over the host's one shared
//! `reqwest` client (connection reuse, rustls), after checking the
//! destination against the replica's allowlist.

use super::error::Labels;
use super::rate::RequestRate;
use super::sandbox::host_allowed;
use futures::TryStreamExt;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use std::sync::Arc;
use std::time::Duration;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

type IoFuture = Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>;
type SendResult = Result<(http::Response<WasiBody>, IoFuture), wasmtime_wasi_http::Error>;

/// Connecting to any store should take seconds; longer is an outage.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A stalled read on an open connection: a dead peer, not a slow one.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Idle connections kept per host: enough for parallel part uploads.
const POOL_IDLE_PER_HOST: usize = 32;
/// Idle connections are closed before typical load balancers drop them
/// (DigitalOcean resets idle sockets, the guide's "connection reset").
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The process's one HTTP client, built on first use: a process whose
/// plugins never reach the network (the file backend) pays nothing for
/// TLS and connection-pool set-up.
#[derive(Clone, Default)]
pub struct LazyClient(Arc<std::sync::OnceLock<Result<reqwest::Client, String>>>);

impl LazyClient {
    fn get(&self) -> Result<reqwest::Client, String> {
        self.0.get_or_init(|| shared_client().map_err(|e| format!("{e:#}"))).clone()
    }
}

fn shared_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .tcp_keepalive(Duration::from_secs(30))
        // A redirect could lead outside the allowlist, so none are followed.
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// Per-instance hooks: the allowlist, the request budget and the client.
pub struct HttpHooks {
    client: LazyClient,
    allow: Vec<String>,
    rate: Option<Arc<RequestRate>>,
    labels: Arc<Labels>,
    /// Hosts refused during this instance's life, for the error message.
    pub refused: Vec<String>,
}

impl HttpHooks {
    pub fn new(client: LazyClient, allow: Vec<String>, rate: Option<Arc<RequestRate>>, labels: Arc<Labels>) -> Self {
        HttpHooks { client, allow, rate, labels, refused: Vec::new() }
    }
}

impl WasiHttpHooks for HttpHooks {
    // The host header comes from the URL, as reqwest sets it.
    fn set_host_header(&mut self) -> bool {
        false
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_errors: IoFuture,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let host = request.uri().host().unwrap_or_default().to_string();
        if !host_allowed(&self.allow, &host) {
            tracing::warn!(
                plugin = %self.labels.plugin, database = %self.labels.database, replica = %self.labels.replica,
                "refused a plugin request to {host}: not on the replica's allowlist {:?}", self.allow
            );
            self.refused.push(host);
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        match self.client.get() {
            Ok(client) => {
                let (rate, labels) = (self.rate.clone(), self.labels.clone());
                Box::new(async move {
                    if let Some(rate) = rate {
                        throttle(&rate, &labels).await;
                    }
                    send(client, request, options).await
                })
            }
            Err(e) => Box::new(async move {
                Err(wasmtime_wasi_http::Error::InternalError(Some(format!(
                    "cannot set up the host's HTTP client: {e}"
                ))))
            }),
        }
    }
}

/// Wait for the replica's request budget, counting the wait.
async fn throttle(rate: &RequestRate, labels: &Labels) {
    let waited = rate.admit().await;
    if !waited.is_zero() {
        let l = [labels.plugin.as_str(), crate::metrics::counted(&labels.database), labels.replica.as_str()];
        crate::metrics::PLUGIN_THROTTLED_SECONDS.with_label_values(&l).inc_by(waited.as_secs_f64());
    }
}

async fn send(
    client: reqwest::Client,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> SendResult {
    let (parts, body) = request.into_parts();
    let mut builder = client.request(parts.method.clone(), parts.uri.to_string()).headers(parts.headers.clone());
    if let Some(timeout) = options.and_then(|o| o.first_byte_timeout) {
        builder = builder.timeout(timeout + READ_TIMEOUT);
    }
    let has_length = parts.headers.contains_key(http::header::CONTENT_LENGTH);
    let bodiless = matches!(parts.method, http::Method::GET | http::Method::HEAD | http::Method::DELETE);
    if has_length {
        // Stream with the declared length: no copy, no chunked encoding
        // (which many S3-compatible stores reject).
        let stream = body.into_data_stream().map_err(|e| std::io::Error::other(format!("{e:?}")));
        builder = builder.body(reqwest::Body::wrap_stream(stream));
    } else if !bodiless {
        let bytes = body.collect().await?.to_bytes();
        builder = builder.body(bytes);
    }
    let response = builder.send().await.map_err(map_reqwest_error)?;
    let mut out = http::Response::builder().status(response.status()).version(response.version());
    if let Some(headers) = out.headers_mut() {
        *headers = response.headers().clone();
    }
    let stream = response.bytes_stream().map_ok(Frame::data).map_err(map_reqwest_error);
    let body: WasiBody = StreamBody::new(stream).boxed_unsync();
    let response = out.body(body).map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string())))?;
    let io: IoFuture = Box::new(async { Ok(()) });
    Ok((response, io))
}

fn map_reqwest_error(e: reqwest::Error) -> wasmtime_wasi_http::Error {
    use wasmtime_wasi_http::Error as E;
    tracing::debug!("http transport error: {e:?}");
    if e.is_timeout() {
        E::ConnectionTimeout
    } else if e.is_connect() {
        connect_error(&e)
    } else if e.is_request() || e.is_body() || e.is_decode() {
        E::ConnectionTerminated
    } else {
        E::InternalError(Some(e.to_string()))
    }
}

/// What kind of connect error `e` is. reqwest calls a failed DNS lookup, a
/// refused or unreachable destination and a failed TLS handshake all
/// "connect" errors; told apart from its causes, the plugin and the log
/// say which (a misspelt host was reported as "connection refused").
fn connect_error(e: &reqwest::Error) -> wasmtime_wasi_http::Error {
    use std::io::ErrorKind as K;
    use wasmtime_wasi_http::Error as E;
    let (mut causes, mut io_kind) = (Vec::new(), None);
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        causes.push(s.to_string());
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            io_kind.get_or_insert(io.kind());
        }
        source = s.source();
    }
    let text = causes.join(": ");
    // hyper-util's resolver wraps every lookup failure as "dns error".
    if text.contains("dns error") {
        return E::DnsError { rcode: Some(text), info_code: None };
    }
    match io_kind {
        Some(K::ConnectionRefused) => E::ConnectionRefused,
        Some(K::HostUnreachable | K::NetworkUnreachable) => E::DestinationUnavailable,
        Some(K::TimedOut) => E::ConnectionTimeout,
        _ if text.contains("certificate") => E::TlsCertificateError,
        _ => E::InternalError(Some(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn connect_failure(url: &str) -> wasmtime_wasi_http::Error {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
        map_reqwest_error(client.get(url).send().await.unwrap_err())
    }

    #[tokio::test]
    async fn a_host_that_does_not_resolve_is_a_dns_error_not_a_refusal() {
        let got = connect_failure("http://no-such-host.invalid:9/").await;
        assert!(matches!(got, wasmtime_wasi_http::Error::DnsError { .. }), "{got:?}");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let got = connect_failure(&format!("http://127.0.0.1:{port}/")).await;
        assert!(matches!(got, wasmtime_wasi_http::Error::ConnectionRefused), "{got:?}");
    }
}
