//! A fault-injecting HTTP/1.1 proxy on 127.0.0.1 in front of an S3 server.
//! Requests are forwarded byte for byte, Host header included, so SigV4
//! signatures made for the proxy's address verify upstream; a policy
//! decides, request by request, what happens to each one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// What the proxy does to a request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    None,
    /// Close the client's connection with a TCP reset, answering nothing.
    Reset,
    /// Answer `503 Slow Down` with S3's XML error.
    SlowDown,
    /// Answer with this status and S3 error code (the connection closes).
    Status(u16, &'static str),
    /// Wait this long, then forward.
    Delay(Duration),
    /// Read the request, answer `200 OK` and forward nothing: a store that
    /// accepts a PUT and then loses it.
    Lose,
}

/// The request a policy decides about: its method and path (with query),
/// and its number (1-based, over the proxy's life).
pub struct Request<'a> {
    pub method: &'a str,
    pub target: &'a str,
    pub n: usize,
}

/// A policy: what to do to each request.
pub type Policy = Arc<dyn Fn(&Request) -> Fault + Send + Sync>;

/// The proxy; it stops accepting when dropped.
pub struct Proxy {
    pub port: u16,
    /// Requests seen (faulted or not).
    pub requests: Arc<AtomicUsize>,
    /// Requests given a fault other than `None` or `Delay`, and connections
    /// refused while down.
    pub faults: Arc<AtomicUsize>,
    /// While set, the store is down: new connections are reset as soon as
    /// they are accepted and requests on open ones are reset.
    pub down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: u16, policy: Policy) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let p = Proxy {
            port,
            requests: Arc::default(),
            faults: Arc::default(),
            down: Arc::default(),
            stop: Arc::default(),
        };
        let (requests, faults, down, stop) = (p.requests.clone(), p.faults.clone(), p.down.clone(), p.stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                if down.load(Ordering::SeqCst) {
                    faults.fetch_add(1, Ordering::SeqCst);
                    set_linger_zero(&client);
                    drop(client);
                    continue;
                }
                let (requests, faults, down, policy) = (requests.clone(), faults.clone(), down.clone(), policy.clone());
                std::thread::spawn(move || {
                    let decide = |method: &str, target: &str| {
                        let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
                        let fault = if down.load(Ordering::SeqCst) {
                            Fault::Reset
                        } else {
                            policy(&Request { method, target, n })
                        };
                        if !matches!(fault, Fault::None | Fault::Delay(_)) {
                            faults.fetch_add(1, Ordering::SeqCst);
                        }
                        fault
                    };
                    let _ = proxy_connection(client, upstream, decide);
                });
            }
        });
        p
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Read a request head (through the blank line); None at a clean EOF.
fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return if head.is_empty() { Ok(None) } else { Err(std::io::ErrorKind::UnexpectedEof.into()) };
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            return Ok(Some(head));
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Copy a request body (Content-Length or chunked) from `r` to `w`.
fn copy_body(head: &str, r: &mut impl BufRead, w: &mut impl Write) -> std::io::Result<()> {
    if header(head, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        loop {
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line)?;
            w.write_all(&line)?;
            let size_text = String::from_utf8_lossy(&line);
            let size = usize::from_str_radix(size_text.trim().split(';').next().unwrap_or("0").trim(), 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    let mut t = Vec::new();
                    r.read_until(b'\n', &mut t)?;
                    w.write_all(&t)?;
                    if t == b"\r\n" || t == b"\n" || t.is_empty() {
                        return Ok(());
                    }
                }
            }
            std::io::copy(&mut r.take(size as u64 + 2), w)?;
        }
    }
    let len: u64 = header(head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let copied = std::io::copy(&mut r.take(len), w)?;
    if copied != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Make closing the socket abort the connection with a TCP RST.
fn set_linger_zero(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a socket we own, with a correctly sized struct.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as u32,
        );
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Slow Down",
        _ => "Error",
    }
}

/// One client connection: requests go upstream one by one (parsed, so each
/// can be faulted); responses are copied back verbatim by another thread.
/// Clients do not pipeline, so an injected answer never interleaves with
/// an upstream one.
pub fn proxy_connection(
    client: TcpStream,
    upstream_port: u16,
    mut decide: impl FnMut(&str, &str) -> Fault,
) -> std::io::Result<()> {
    let upstream = TcpStream::connect(("127.0.0.1", upstream_port))?;
    let mut to_client = client.try_clone()?;
    let mut from_upstream = upstream.try_clone()?;
    let aborted = Arc::new(AtomicBool::new(false));
    let aborted2 = aborted.clone();
    let responses = std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_upstream, &mut to_client);
        if !aborted2.load(Ordering::SeqCst) {
            let _ = to_client.shutdown(Shutdown::Write);
        }
    });
    let mut reader = BufReader::new(client.try_clone()?);
    let mut to_upstream = upstream.try_clone()?;
    let result = (|| -> std::io::Result<()> {
        while let Some(head) = read_head(&mut reader)? {
            let text = String::from_utf8_lossy(&head).into_owned();
            let mut words = text.split_whitespace();
            let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            let expect_continue = header(&text, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
            let fault = decide(method, target);
            match fault {
                Fault::None | Fault::Delay(_) => {
                    if let Fault::Delay(d) = fault {
                        std::thread::sleep(d);
                    }
                    to_upstream.write_all(&head)?;
                    copy_body(&text, &mut reader, &mut to_upstream)?;
                    to_upstream.flush()?;
                }
                Fault::Reset => {
                    // The socket closes (with RST) when the last handle goes.
                    aborted.store(true, Ordering::SeqCst);
                    set_linger_zero(&client);
                    return Ok(());
                }
                Fault::Lose => {
                    let mut w = client.try_clone()?;
                    if expect_continue {
                        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
                    }
                    copy_body(&text, &mut reader, &mut std::io::sink())?;
                    w.write_all(
                        b"HTTP/1.1 200 OK\r\nETag: \"d41d8cd98f00b204e9800998ecf8427e\"\r\nContent-Length: 0\r\n\r\n",
                    )?;
                    w.flush()?;
                }
                Fault::SlowDown | Fault::Status(..) => {
                    let (status, code) = match fault {
                        Fault::Status(s, c) => (s, c),
                        _ => (503, "SlowDown"),
                    };
                    if !expect_continue {
                        copy_body(&text, &mut reader, &mut std::io::sink())?;
                    }
                    let body = format!(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>Injected by the fault proxy.</Message><RequestId>fault-proxy</RequestId></Error>"
                    );
                    let answer = format!(
                        "HTTP/1.1 {status} {}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        reason(status),
                        body.len()
                    );
                    let mut w = client.try_clone()?;
                    w.write_all(answer.as_bytes())?;
                    w.flush()?;
                    let _ = upstream.shutdown(Shutdown::Both);
                    let _ = client.shutdown(Shutdown::Write);
                    return Ok(());
                }
            }
        }
        Ok(())
    })();
    let _ = upstream.shutdown(Shutdown::Both);
    let _ = responses.join();
    result
}
