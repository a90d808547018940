//! A TCP connection for tokio inside a WASI component. tokio's own
//! sockets need its I/O driver, which `wasm32-wasip2` does not have; so
//! this wraps a non-blocking `std::net::TcpStream` (wasi:sockets) and
//! does the driver's one job itself: when every task waits, the runtime's
//! park hook (`Readiness::block`) blocks in `poll()` on the socket until
//! it is ready or `PARK_INTERVAL` passes, then wakes the task that waits
//! on it. The wait is spent in the host: the call's CPU budget is charged
//! one tick a wake-up, not the time waited, and data that arrives wakes
//! the task at once.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Sleep, sleep};

/// The longest one park blocks in `poll()`, and the period of the timer a
/// waiting read or write keeps armed (so the runtime always has a timer
/// when it parks: without one, tokio's park waits on a condition variable,
/// which a thread-less component cannot). The plugin's other timers are
/// 20 s and more, so firing up to this late costs little; each wake-up is
/// one 10 ms tick of the call's CPU budget, so an idle wait costs 1% of it.
const PARK_INTERVAL: Duration = Duration::from_secs(1);

/// What the socket's tasks wait for, shared with the runtime's park hook.
#[derive(Default)]
pub struct Readiness {
    waiting: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    fd: Option<RawFd>,
    read: Option<Waker>,
    write: Option<Waker>,
}

impl Readiness {
    fn want(&self, write: bool, fd: RawFd, waker: &Waker) {
        if let Ok(mut w) = self.waiting.lock() {
            w.fd = Some(fd);
            let slot = if write { &mut w.write } else { &mut w.read };
            *slot = Some(waker.clone());
        }
    }

    fn done(&self, write: bool) {
        if let Ok(mut w) = self.waiting.lock() {
            let slot = if write { &mut w.write } else { &mut w.read };
            *slot = None;
        }
    }

    /// The park hook: block until the socket is ready for what a task
    /// waits for (or `PARK_INTERVAL` passes), then wake that task.
    pub fn block(&self) {
        let Ok(mut w) = self.waiting.lock() else { return };
        let Some(fd) = w.fd else { return };
        let events =
            if w.read.is_some() { libc::POLLIN } else { 0 } | if w.write.is_some() { libc::POLLOUT } else { 0 };
        if events == 0 {
            return;
        }
        let mut pfd = libc::pollfd { fd, events, revents: 0 };
        // SAFETY: one valid pollfd, owned here, for the length of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, PARK_INTERVAL.as_millis() as i32) };
        if n < 0 {
            // poll() itself failed: wake no one; the armed timers retry.
            return;
        }
        let failed = pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0;
        // On an error, wake both: their next read or write reports it.
        if (failed || pfd.revents & libc::POLLIN != 0)
            && let Some(waker) = w.read.take()
        {
            waker.wake();
        }
        if (failed || pfd.revents & libc::POLLOUT != 0)
            && let Some(waker) = w.write.take()
        {
            waker.wake();
        }
    }
}

pub struct Socket {
    tcp: TcpStream,
    ready: Arc<Readiness>,
    read_wait: Option<Pin<Box<Sleep>>>,
    write_wait: Option<Pin<Box<Sleep>>>,
}

impl Socket {
    pub fn new(tcp: TcpStream, ready: Arc<Readiness>) -> io::Result<Self> {
        tcp.set_nonblocking(true)?;
        tcp.set_nodelay(true)?;
        Ok(Socket { tcp, ready, read_wait: None, write_wait: None })
    }
}

/// Run `op` until it does not block; when it would, register the task
/// with the park hook, keep a timer armed, and say Pending.
fn retry<T>(
    wait: &mut Option<Pin<Box<Sleep>>>,
    ready: (&Readiness, bool, RawFd),
    cx: &mut Context<'_>,
    mut op: impl FnMut() -> io::Result<T>,
) -> Poll<io::Result<T>> {
    let (readiness, write, fd) = ready;
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => {
                *wait = None;
                readiness.done(write);
                return Poll::Ready(other);
            }
        }
        readiness.want(write, fd, cx.waker());
        let timer = wait.get_or_insert_with(|| Box::pin(sleep(PARK_INTERVAL)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // The timer ran out: try again, with a fresh one if still blocked.
        *wait = None;
    }
}

impl AsyncRead for Socket {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let fd = this.tcp.as_raw_fd();
        let tcp = &mut this.tcp;
        let read = retry(&mut this.read_wait, (&this.ready, false, fd), cx, || tcp.read(buf.initialize_unfilled()));
        read.map_ok(|n| buf.advance(n))
    }
}

impl AsyncWrite for Socket {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let fd = this.tcp.as_raw_fd();
        let tcp = &mut this.tcp;
        retry(&mut this.write_wait, (&this.ready, true, fd), cx, || tcp.write(data))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let fd = this.tcp.as_raw_fd();
        let tcp = &mut this.tcp;
        retry(&mut this.write_wait, (&this.ready, true, fd), cx, || tcp.flush())
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.tcp.shutdown(std::net::Shutdown::Write).or(Ok(())))
    }
}
