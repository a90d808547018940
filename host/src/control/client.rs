//! The CLI's side of the control socket: one HTTP/1.1 request over the
//! Unix socket, its JSON answer.

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use std::path::Path;
use std::time::Duration;

/// Send `method path` with `body` (JSON) and wait up to `timeout` for
/// the answer: the JSON body of a 200; an error naming the daemon's own
/// message otherwise (`what` names the command, as Litestream's "stop
/// failed: ...").
pub async fn call(
    socket: &Path,
    method: hyper::Method,
    path: &str,
    body: Option<serde_json::Value>,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<serde_json::Value> {
    let exchange = exchange(socket, method, path, body);
    let (status, answer) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("{what} failed: no answer from the control socket within {timeout:?}"))??;
    if status == 200 {
        return Ok(answer);
    }
    let message =
        answer.get("error").and_then(|e| e.as_str()).map(str::to_string).unwrap_or_else(|| answer.to_string());
    match answer.get("details").and_then(|d| d.as_str()) {
        Some(details) => anyhow::bail!("{what} failed: {message} ({details})"),
        None => anyhow::bail!("{what} failed: {message}"),
    }
}

async fn exchange(
    socket: &Path,
    method: hyper::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let stream = tokio::net::UnixStream::connect(socket).await.with_context(|| {
        format!(
            "failed to connect to control socket {}: is `sluice replicate` running with `socket: {{enabled: true}}`, and is -socket its path?",
            socket.display()
        )
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body)))?;
    let response = sender.send_request(request).await.context("the control socket closed the connection")?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    let answer = serde_json::from_slice(&bytes).with_context(|| {
        format!("the control socket answered {status} with no JSON: {}", String::from_utf8_lossy(&bytes))
    })?;
    Ok((status, answer))
}
