//! The daemon's side of the control socket: HTTP/1.1 over a Unix socket,
//! one JSON request and answer per call, each acted on through the
//! registry of running databases.

use super::api::*;
use crate::config::{FileConfig, socket::SocketSpec};
use crate::replicate::{Added, Registry, State, Toggled};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Largest request body read: requests are a path and a URL.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// What every handler needs.
struct Ctx {
    registry: Arc<Registry>,
    /// The config file's globals: defaults for a registered replica URL.
    defaults: Arc<FileConfig>,
}

/// An answer: HTTP status and JSON body.
type Answer = (u16, serde_json::Value);

/// Bind the socket (replacing a stale one, never another kind of file),
/// set its permissions, and serve it until `shutdown`; the socket file is
/// removed then. An error binding is the operator's to fix and ends the
/// run before anything starts.
pub fn serve(
    spec: &SocketSpec,
    registry: Arc<Registry>,
    defaults: Arc<FileConfig>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let path = spec.path.clone();
    let listener = bind(&path, spec.permissions)?;
    tracing::info!(path = %path.display(), "control socket listening");
    let ctx = Arc::new(Ctx { registry, defaults });
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!("control socket: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            tokio::spawn(connection(stream, ctx.clone()));
        }
        let _ = std::fs::remove_file(&path);
    });
    Ok(())
}

fn bind(path: &Path, permissions: u32) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale control socket {}", path.display()))?,
        Ok(_) => anyhow::bail!(
            "control socket path {} exists and is not a socket; remove it or set socket.path elsewhere",
            path.display()
        ),
        Err(_) => {}
    }
    let listener = tokio::net::UnixListener::bind(path).with_context(|| {
        format!("cannot listen on the control socket {} (does its directory exist and is it writable?)", path.display())
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(permissions))
        .with_context(|| format!("cannot set the permissions of the control socket {}", path.display()))?;
    Ok(listener)
}

async fn connection(stream: tokio::net::UnixStream, ctx: Arc<Ctx>) {
    use http_body_util::{BodyExt, Full, Limited};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let ctx = ctx.clone();
        async move {
            let (parts, body) = req.into_parts();
            let (status, json) = match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
                Ok(body) => route(&ctx, &parts.method, parts.uri.path(), parts.uri.query(), &body.to_bytes()).await,
                Err(e) => error(400, "request body unreadable or too large", Some(e.to_string())),
            };
            let mut text = json.to_string();
            text.push('\n');
            hyper::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(bytes::Bytes::from(text)))
        }
    });
    let io = hyper_util::rt::TokioIo::new(stream);
    let _ = http1::Builder::new().serve_connection(io, service).await;
}

async fn route(ctx: &Ctx, method: &hyper::Method, path: &str, query: Option<&str>, body: &[u8]) -> Answer {
    use hyper::Method;
    match (method, path) {
        (&Method::GET, "/info") => info(ctx).await,
        (&Method::GET, "/list") => list(ctx).await,
        (&Method::GET, "/txid") => txid(ctx, query).await,
        (&Method::POST, "/sync") => with_body(body, |r| sync(ctx, r)).await,
        (&Method::POST, "/register") => with_body(body, |r| register(ctx, r)).await,
        (&Method::POST, "/unregister") => with_body(body, |r| unregister(ctx, r)).await,
        (&Method::POST, "/start") => with_body(body, |r| start(ctx, r)).await,
        (&Method::POST, "/stop") => with_body(body, |r| stop(ctx, r)).await,
        (_, "/info" | "/list" | "/txid" | "/sync" | "/register" | "/unregister" | "/start" | "/stop") => {
            error(405, "method not allowed", None)
        }
        _ => error(404, &format!("no such endpoint: {path}"), None),
    }
}

async fn with_body<T: serde::de::DeserializeOwned, F: Future<Output = Answer>>(
    body: &[u8],
    handler: impl FnOnce(T) -> F,
) -> Answer {
    match serde_json::from_slice::<T>(body) {
        Ok(request) => handler(request).await,
        Err(e) => error(400, "invalid request body", Some(e.to_string())),
    }
}

fn error(status: u16, message: &str, details: Option<String>) -> Answer {
    (status, json(&ErrorResponse { error: message.to_string(), details }))
}

fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// A request's path as the registry knows it: `~` and `sqlite://`
/// expanded, made absolute.
fn db_path(raw: &str) -> Result<PathBuf, Answer> {
    if raw.is_empty() {
        return Err(error(400, "path required", None));
    }
    std::path::absolute(crate::config::resolve::db_path(raw))
        .map_err(|e| error(400, &format!("invalid path: {e}"), None))
}

fn not_found(path: &Path) -> Answer {
    error(404, &format!("database not found: {}", path.display()), None)
}

fn timeout(secs: Option<u64>) -> Duration {
    Duration::from_secs(secs.filter(|s| *s > 0).unwrap_or(DEFAULT_TIMEOUT_SECS))
}

async fn info(ctx: &Ctx) -> Answer {
    let started_ms = ctx.registry.started_ms;
    let uptime_ms = (crate::clock::now_ms() - started_ms).max(0) as u64;
    (
        200,
        json(&InfoResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            uptime_seconds: uptime_ms / 1000,
            started_at: crate::clock::rfc3339(started_ms),
            database_count: ctx.registry.count().await,
        }),
    )
}

async fn list(ctx: &Ctx) -> Answer {
    let databases = ctx
        .registry
        .list()
        .await
        .into_iter()
        .map(|s| DatabaseSummary {
            path: s.path.display().to_string(),
            status: match s.state {
                State::Replicating => "replicating",
                State::Opening => "waiting",
                State::Stopped => "stopped",
            }
            .to_string(),
            last_sync_at: s.last_sync_ms.map(crate::clock::rfc3339),
        })
        .collect();
    (200, json(&ListResponse { databases }))
}

async fn txid(ctx: &Ctx, query: Option<&str>) -> Answer {
    let raw = query
        .and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "path").map(|(_, v)| v.into_owned()))
        .unwrap_or_default();
    let path = match db_path(&raw) {
        Ok(p) => p,
        Err(answer) => return answer,
    };
    match ctx.registry.live(&path).await {
        Some(live) => (200, json(&TxidResponse { txid: live.txid() })),
        None => not_found(&path),
    }
}

async fn sync(ctx: &Ctx, req: SyncRequest) -> Answer {
    let path = match db_path(&req.path) {
        Ok(p) => p,
        Err(answer) => return answer,
    };
    let Some(live) = ctx.registry.live(&path).await else { return not_found(&path) };
    if live.state() != State::Replicating {
        return error(409, &format!("{} is not replicating (stopped, or not open yet)", path.display()), None);
    }
    let wait = timeout(req.timeout);
    let before = live.txid();
    let Some(report) = live.sync_now(wait).await else {
        return error(504, &format!("{}: no sync finished within {wait:?}", path.display()), None);
    };
    if let Some(e) = report.error {
        return error(500, &format!("{}: sync failed: {e}", path.display()), None);
    }
    let replicated = match req.wait {
        true => live.wait_shipped(report.txid, wait).await,
        false => live.replicated_txid().unwrap_or(0),
    };
    if req.wait && replicated < report.txid {
        let why = format!("the replicas hold TXID {replicated} of {} after {wait:?}", report.txid);
        return error(504, &format!("{}: not every replica received the sync", path.display()), Some(why));
    }
    let status = if report.txid != before { "synced" } else { "no_change" };
    let path = path.display().to_string();
    (200, json(&SyncResponse { status: status.into(), path, txid: report.txid, replicated_txid: replicated }))
}

async fn register(ctx: &Ctx, req: RegisterRequest) -> Answer {
    let path = match db_path(&req.path) {
        Ok(p) => p,
        Err(answer) => return answer,
    };
    if req.replica_url.is_empty() {
        return error(400, "replica_url required", None);
    }
    let spec = match crate::config::from_url(&path, &req.replica_url, &ctx.defaults) {
        Ok(spec) => spec,
        Err(e) => return error(400, &format!("invalid replica url: {e:#}"), None),
    };
    let status = match ctx.registry.add(spec).await {
        Ok(Added::Added) => "registered",
        Ok(Added::AlreadyPresent) => "already_registered",
        Err(e) => return error(400, &format!("failed to register database: {e:#}"), None),
    };
    tracing::info!(database = %path.display(), replica = %crate::plugin::redact_url(&req.replica_url), "{status} through the control socket");
    (200, json(&StatusResponse { status: status.into(), path: path.display().to_string(), txid: None }))
}

async fn unregister(ctx: &Ctx, req: PathRequest) -> Answer {
    let path = match db_path(&req.path) {
        Ok(p) => p,
        Err(answer) => return answer,
    };
    let txid = ctx.registry.live(&path).await.map_or(0, |l| l.txid());
    let status = match ctx.registry.remove(&path, timeout(req.timeout)).await {
        None => "already_unregistered",
        Some(Ok(())) => "unregistered",
        Some(Err(e)) => return error(500, &format!("failed to unregister database: {e:#}"), None),
    };
    tracing::info!(database = %path.display(), "{status} through the control socket");
    (200, json(&StatusResponse { status: status.into(), path: path.display().to_string(), txid: Some(txid) }))
}

async fn start(ctx: &Ctx, req: PathRequest) -> Answer {
    toggle(ctx, req, true).await
}

async fn stop(ctx: &Ctx, req: PathRequest) -> Answer {
    toggle(ctx, req, false).await
}

async fn toggle(ctx: &Ctx, req: PathRequest, on: bool) -> Answer {
    let path = match db_path(&req.path) {
        Ok(p) => p,
        Err(answer) => return answer,
    };
    let outcome = match on {
        true => ctx.registry.start(&path).await,
        false => ctx.registry.stop(&path, timeout(req.timeout)).await,
    };
    let status = match (outcome, on) {
        (None, _) => return not_found(&path),
        (Some(Err(e)), _) => return error(500, &format!("{e:#}"), None),
        (Some(Ok(Toggled::Done)), true) => "started",
        (Some(Ok(Toggled::Already)), true) => "already_running",
        (Some(Ok(Toggled::Done)), false) => "stopped",
        (Some(Ok(Toggled::Already)), false) => "already_stopped",
    };
    tracing::info!(database = %path.display(), "{status} through the control socket");
    let txid = ctx.registry.live(&path).await.map_or(0, |l| l.txid());
    (200, json(&StatusResponse { status: status.into(), path: path.display().to_string(), txid: Some(txid) }))
}
