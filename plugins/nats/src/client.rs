//! A blocking NATS connection over `std::net::TcpStream` (wasi:sockets on
//! wasm32-wasip2): the handshake, request/reply over one `_INBOX`
//! subscription, and JetStream API calls on top.

use crate::READ_TIMEOUT_SECS;
use crate::js::{self, ApiError};
use crate::location::{Auth, Location};
use crate::proto::{self, Msg, Op, ServerInfo};
use serde::de::DeserializeOwned;
use sluice_sdk::Error;
use std::io::{self, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One connection to the replica's server.
pub struct Client {
    /// The socket, read through a buffer and written directly (wasi
    /// sockets cannot be duplicated with `try_clone`).
    reader: BufReader<TcpStream>,
    /// `_INBOX.<unique>`; replies come to `<inbox>.<n>`.
    inbox: String,
    next: u64,
    server: String,
    /// Set by an I/O failure: the connection is unusable and must be
    /// dropped (the next call connects again).
    pub broken: bool,
}

/// The contract's error for a failed read or write.
fn io_error(server: &str, e: &io::Error) -> Error {
    use io::ErrorKind as K;
    match e.kind() {
        K::TimedOut | K::WouldBlock => {
            Error::transient(format!("{server}: no answer within {READ_TIMEOUT_SECS} s (server down or overloaded?)"))
        }
        K::PermissionDenied => Error::access_denied(format!(
            "{server}: the sandbox refused the connection (a plugin may reach only its replica URL's host and port)"
        )),
        K::InvalidData => Error::permanent(format!("{server}: not a NATS server, or a garbled answer: {e}")),
        _ => Error::transient(format!("{server}: {e}")),
    }
}

/// The contract's error for a `-ERR` from the server.
fn server_error(server: &str, auth: Option<&Auth>, message: &str) -> Error {
    let lower = message.to_ascii_lowercase();
    if lower.contains("authorization") || lower.contains("authentication") || lower.contains("user authentication") {
        let how = match auth {
            Some(Auth::UserPassword { user, .. }) => format!("user `{user}` and its password"),
            Some(Auth::Token(_)) => "the token".to_string(),
            Some(Auth::Nkey { jwt: Some(_), .. }) => "the user JWT signed with `seed`".to_string(),
            Some(Auth::Nkey { seed, .. }) => {
                format!("NKey user {}", nkeys::KeyPair::from_seed(seed).map(|p| p.public_key()).unwrap_or_default())
            }
            _ => "no credentials (give username/password or token)".to_string(),
        };
        return Error::access_denied(format!("{server} refused the credentials ({how}): {message}"));
    }
    if lower.contains("permissions violation") {
        return Error::access_denied(format!("{server}: {message} (the user lacks a permission JetStream needs)"));
    }
    if lower.contains("maximum payload") {
        return Error::invalid_config(format!("{server}: {message}"));
    }
    Error::permanent(format!("{server}: {message}"))
}

impl Client {
    /// Connect, authenticate and subscribe to the reply inbox.
    pub fn connect(at: &Location, unique: &str) -> Result<Client, Error> {
        let server = format!("nats://{}:{}", at.host, at.port);
        let stream = TcpStream::connect((at.host.as_str(), at.port)).map_err(|e| io_error(&server, &e))?;
        let timeout = Some(Duration::from_secs(READ_TIMEOUT_SECS));
        // Without a read timeout a dead server would hang the call; a
        // runtime that cannot set one still works, only less guarded.
        if let Err(e) = stream.set_read_timeout(timeout).and_then(|_| stream.set_write_timeout(timeout)) {
            sluice_sdk::warn!("{server}: cannot set socket timeouts: {e}");
        }
        let _ = stream.set_nodelay(true);
        let inbox = format!("_INBOX.{unique}");
        let mut client = Client { reader: BufReader::new(stream), inbox, next: 0, server, broken: false };
        client.handshake(&at.auth)?;
        Ok(client)
    }

    fn handshake(&mut self, auth: &Auth) -> Result<(), Error> {
        let info = match self.read()? {
            Op::Info(json) => serde_json::from_str::<ServerInfo>(&json)
                .map_err(|e| Error::permanent(format!("{}: unreadable INFO: {e}", self.server)))?,
            other => return Err(Error::permanent(format!("{}: expected INFO first, got {other:?}", self.server))),
        };
        if info.tls_required {
            return Err(Error::unsupported(format!(
                "{} requires TLS, and this plugin speaks plain TCP only: reach it through a local nats-server \
                 leaf node or a TLS-terminating proxy and point the replica URL there",
                self.server
            )));
        }
        if !info.headers {
            return Err(Error::unsupported(format!(
                "{} (nats-server {}) does not support message headers; the object store needs nats-server 2.6.2 or newer",
                self.server, info.version
            )));
        }
        let mut hello = proto::connect_line(auth, env!("CARGO_PKG_VERSION"), info.nonce.as_deref())?.into_bytes();
        hello.extend_from_slice(b"PING\r\n");
        hello.extend_from_slice(format!("SUB {}.* 1\r\n", self.inbox).as_bytes());
        self.write(&hello)?;
        loop {
            match self.read()? {
                Op::Pong => return Ok(()),
                Op::Err(m) => return Err(server_error(&self.server, Some(auth), &m)),
                Op::Ping => self.write(b"PONG\r\n")?,
                _ => {}
            }
        }
    }

    fn read(&mut self) -> Result<Op, Error> {
        proto::read_op(&mut self.reader).map_err(|e| {
            self.broken = true;
            io_error(&self.server, &e)
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let mut socket = self.reader.get_ref();
        socket.write_all(bytes).and_then(|_| socket.flush()).map_err(|e| {
            self.broken = true;
            io_error(&self.server, &e)
        })
    }

    /// Publish to `subject` and wait for the one reply.
    pub fn request(&mut self, subject: &str, headers: &[(&str, &str)], payload: &[u8]) -> Result<Msg, Error> {
        self.next += 1;
        let reply = format!("{}.{}", self.inbox, self.next);
        self.write(&proto::publish_frame(subject, &reply, headers, payload))?;
        loop {
            match self.read()? {
                Op::Msg(m) if m.subject == reply => return Ok(m),
                Op::Ping => self.write(b"PONG\r\n")?,
                Op::Err(m) => {
                    // Most -ERRs end the connection; make the next call reconnect.
                    self.broken = true;
                    return Err(server_error(&self.server, None, &m));
                }
                // Late replies to earlier requests, +OK, PONG, INFO updates.
                _ => {}
            }
        }
    }

    /// A JetStream API call (`$JS.API.<api>`): its answer or API error.
    pub fn api<T: DeserializeOwned>(&mut self, api: &str, body: &str) -> Result<Result<T, ApiError>, Error> {
        let reply = self.request(&format!("$JS.API.{api}"), &[], body.as_bytes())?;
        if reply.status() == Some(503) {
            return Err(js::not_enabled(&self.server));
        }
        js::parse(&reply.payload)
    }

    /// Publish into a stream and wait for its acknowledgement.
    pub fn publish(
        &mut self,
        subject: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> Result<Result<js::PubAck, ApiError>, Error> {
        let reply = self.request(subject, headers, payload)?;
        if reply.status() == Some(503) {
            return Err(Error::transient(format!(
                "{}: no JetStream stream took {subject} (the bucket's stream was deleted meanwhile?)",
                self.server
            )));
        }
        js::parse(&reply.payload)
    }

    pub fn server(&self) -> &str {
        &self.server
    }
}
