//! A plugin's stderr: never refuses a write (a chatty plugin must not
//! crash), keeps only the last bytes, which explain a crash (the panic
//! message comes last).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The most recent bytes written, up to a bound.
#[derive(Clone)]
pub struct TailPipe {
    buf: Arc<Mutex<VecDeque<u8>>>,
    capacity: usize,
}

impl TailPipe {
    pub fn new(capacity: usize) -> Self {
        TailPipe { buf: Arc::new(Mutex::new(VecDeque::with_capacity(capacity))), capacity }
    }

    /// What was kept, lossily decoded.
    pub fn contents(&self) -> String {
        let buf = self.buf.lock().map(|b| b.iter().copied().collect::<Vec<u8>>()).unwrap_or_default();
        String::from_utf8_lossy(&buf).into_owned()
    }

    fn push(&self, data: &[u8]) {
        if let Ok(mut buf) = self.buf.lock() {
            let data = &data[data.len().saturating_sub(self.capacity)..];
            let overflow = (buf.len() + data.len()).saturating_sub(self.capacity).min(buf.len());
            buf.drain(..overflow);
            buf.extend(data);
        }
    }
}

impl IsTerminal for TailPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for TailPipe {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    /// Written in place. wasmtime's default adapter hands each write to a
    /// worker task and the plugin waits for it: in a busy process that
    /// was about one epoch tick (10 ms) a line, 20 s for a panic's worth
    /// of chatter in a loop.
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

/// Space offered to each write: anything, as the buffer keeps only its tail.
const WRITE_BUDGET: usize = 64 * 1024;

impl OutputStream for TailPipe {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

impl Pollable for TailPipe {
    /// Always ready (the trait's `async fn`, written out).
    fn ready<'a, 'f>(&'a mut self) -> Pin<Box<dyn Future<Output = ()> + Send + 'f>>
    where
        'a: 'f,
        Self: 'f,
    {
        Box::pin(std::future::ready(()))
    }
}

impl AsyncWrite for TailPipe {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.push(data);
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_tail() {
        let p = TailPipe::new(8);
        p.push(b"hello ");
        p.push(b"world, panic!");
        assert_eq!(p.contents(), ", panic!");
        p.push(&[b'x'; 20]);
        assert_eq!(p.contents(), "xxxxxxxx");
    }

    #[test]
    fn the_wasi_stream_writes_in_place_and_never_refuses() {
        let p = TailPipe::new(8);
        let mut stream = p.p2_stream();
        for _ in 0..100 {
            assert_eq!(stream.check_write().expect("open"), WRITE_BUDGET);
            stream.write(bytes::Bytes::from_static(b"chatter ")).expect("written");
        }
        stream.write(bytes::Bytes::from_static(b"panic!")).expect("written");
        assert_eq!(p.contents(), "r panic!");
    }
}
