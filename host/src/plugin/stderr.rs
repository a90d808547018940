//! A plugin's stderr: never refuses a write (a chatty plugin must not
//! crash), keeps only the last bytes, which explain a crash (the panic
//! message comes last).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

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
}
