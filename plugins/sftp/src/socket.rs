//! A TCP connection for tokio inside a WASI component. tokio's own
//! sockets need its I/O driver, which `wasm32-wasip2` does not have; so
//! this wraps a non-blocking `std::net::TcpStream` (wasi:sockets) and,
//! when the socket would block, waits on a short tokio timer. The
//! runtime then sleeps in the timer instead of spinning, and russh's
//! session task and the caller's task take turns on one thread.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Sleep, sleep};

/// How long a blocked read or write waits before trying again: tokio's
/// timer resolution. Round trips gain at most this much; an idle wait
/// costs a thousand cheap wake-ups a second, only while a call is in
/// progress (between calls nothing runs).
const RETRY_AFTER: Duration = Duration::from_millis(1);

pub struct Socket {
    tcp: TcpStream,
    read_wait: Option<Pin<Box<Sleep>>>,
    write_wait: Option<Pin<Box<Sleep>>>,
}

impl Socket {
    pub fn new(tcp: TcpStream) -> io::Result<Self> {
        tcp.set_nonblocking(true)?;
        tcp.set_nodelay(true)?;
        Ok(Socket { tcp, read_wait: None, write_wait: None })
    }
}

/// Run `op` until it does not block; when it would, arm `wait` and say
/// Pending (the timer wakes the task).
fn retry<T>(
    wait: &mut Option<Pin<Box<Sleep>>>,
    cx: &mut Context<'_>,
    mut op: impl FnMut() -> io::Result<T>,
) -> Poll<io::Result<T>> {
    loop {
        if let Some(w) = wait.as_mut() {
            if w.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            *wait = None;
        }
        match op() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => *wait = Some(Box::pin(sleep(RETRY_AFTER))),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return Poll::Ready(other),
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let tcp = &mut this.tcp;
        let read = retry(&mut this.read_wait, cx, || tcp.read(buf.initialize_unfilled()));
        read.map_ok(|n| buf.advance(n))
    }
}

impl AsyncWrite for Socket {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let tcp = &mut this.tcp;
        retry(&mut this.write_wait, cx, || tcp.write(data))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let tcp = &mut this.tcp;
        retry(&mut this.write_wait, cx, || tcp.flush())
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.tcp.shutdown(std::net::Shutdown::Write).or(Ok(())))
    }
}
