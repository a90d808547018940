//! The NATS client protocol's framing, without I/O of its own: reading
//! the server's operations from any `BufRead` (a socket in the plugin, a
//! byte slice in tests) and writing the client's.

use crate::location::Auth;
use serde::Deserialize;
use sluice_sdk::Error;
use std::io::{self, BufRead, Read};

/// Longest control line accepted (an `INFO` of a large cluster is a few
/// KiB); anything longer is not a NATS server talking.
const MAX_LINE: usize = 1 << 20;
/// Largest message accepted: the biggest JetStream answer this plugin asks
/// for is a stream info listing subjects, far below this.
const MAX_MESSAGE: usize = 64 << 20;

/// What the server says in `INFO` that matters here.
#[derive(Debug, Default, Deserialize)]
pub struct ServerInfo {
    #[serde(default)]
    pub server_id: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub headers: bool,
    #[serde(default)]
    pub auth_required: bool,
    #[serde(default)]
    pub tls_required: bool,
    #[serde(default)]
    pub max_payload: u64,
    /// What a client with an NKey signs to prove it holds the seed.
    #[serde(default)]
    pub nonce: Option<String>,
}

/// A header block: `NATS/1.0 [status [description]]` and its fields.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Headers {
    pub status: Option<u16>,
    pub description: String,
    pub fields: Vec<(String, String)>,
}

impl Headers {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A delivered message (`MSG` or `HMSG`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub subject: String,
    pub sid: String,
    pub reply: Option<String>,
    pub headers: Option<Headers>,
    pub payload: Vec<u8>,
}

impl Msg {
    /// The status of a header-only answer (503: no responders).
    pub fn status(&self) -> Option<u16> {
        self.headers.as_ref().and_then(|h| h.status)
    }
}

/// One operation from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Info(String),
    Msg(Msg),
    Ping,
    Pong,
    Ok,
    Err(String),
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Read the next operation.
pub fn read_op<R: BufRead>(r: &mut R) -> io::Result<Op> {
    let mut line = Vec::new();
    let n = r.by_ref().take(MAX_LINE as u64).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"));
    }
    if line.last() != Some(&b'\n') {
        return Err(bad("a protocol line without an end"));
    }
    let line = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string();
    let (verb, args) = line.split_once([' ', '\t']).unwrap_or((line.as_str(), ""));
    match verb.to_ascii_uppercase().as_str() {
        "PING" => Ok(Op::Ping),
        "PONG" => Ok(Op::Pong),
        "+OK" => Ok(Op::Ok),
        "-ERR" => Ok(Op::Err(args.trim().trim_matches('\'').to_string())),
        "INFO" => Ok(Op::Info(args.trim().to_string())),
        "MSG" => read_msg(r, args, false).map(Op::Msg),
        "HMSG" => read_msg(r, args, true).map(Op::Msg),
        _ => Err(bad(format!("unexpected protocol line {:?}", truncate(&line)))),
    }
}

fn truncate(s: &str) -> &str {
    s.char_indices().nth(80).map_or(s, |(i, _)| &s[..i])
}

/// `MSG subject sid [reply] size` or `HMSG subject sid [reply] hsize size`,
/// then the payload and its CRLF.
fn read_msg<R: BufRead>(r: &mut R, args: &str, with_headers: bool) -> io::Result<Msg> {
    let parts: Vec<&str> = args.split_ascii_whitespace().collect();
    let sizes = if with_headers { 2 } else { 1 };
    if parts.len() != 2 + sizes && parts.len() != 3 + sizes {
        return Err(bad(format!("malformed message line {:?}", truncate(args))));
    }
    let num = |s: &str| s.parse::<usize>().map_err(|_| bad(format!("bad size {s:?}")));
    let total = num(parts[parts.len() - 1])?;
    let header_len = if with_headers { num(parts[parts.len() - 2])? } else { 0 };
    if total > MAX_MESSAGE || header_len > total {
        return Err(bad(format!("message of {total} bytes ({header_len} of headers) refused")));
    }
    let mut body = vec![0; total + 2];
    r.read_exact(&mut body)?;
    if !body.ends_with(b"\r\n") {
        return Err(bad("a message without its CRLF"));
    }
    body.truncate(total);
    let payload = body.split_off(header_len);
    let headers = if with_headers { Some(parse_headers(&body)?) } else { None };
    let reply = (parts.len() == 3 + sizes).then(|| parts[2].to_string());
    Ok(Msg { subject: parts[0].to_string(), sid: parts[1].to_string(), reply, headers, payload })
}

/// A header block, `NATS/1.0 503\r\nKey: Value\r\n\r\n`.
pub fn parse_headers(block: &[u8]) -> io::Result<Headers> {
    let text = String::from_utf8_lossy(block);
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let rest = first.strip_prefix("NATS/1.0").ok_or_else(|| bad(format!("header block starts {first:?}")))?;
    let rest = rest.trim();
    let (code, description) = rest.split_once(' ').unwrap_or((rest, ""));
    let mut headers =
        Headers { status: code.parse().ok(), description: description.trim().to_string(), ..Default::default() };
    for line in lines.filter(|l| !l.is_empty()) {
        if let Some((k, v)) = line.split_once(':') {
            headers.fields.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(headers)
}

/// `CONNECT {...}`: no `+OK` per operation (verbose off), headers and
/// no-responders on (a request nobody serves answers 503 at once instead of
/// timing out), and the credentials.
pub fn connect_line(auth: &Auth, version: &str, nonce: Option<&str>) -> Result<String, Error> {
    let mut options = serde_json::json!({
        "verbose": false,
        "pedantic": false,
        "tls_required": false,
        "lang": "rust-sluice",
        "version": version,
        "name": "sluice",
        "protocol": 1,
        "headers": true,
        "no_responders": true,
        "echo": false,
    });
    match auth {
        Auth::None => {}
        Auth::UserPassword { user, password } => {
            options["user"] = user.as_str().into();
            options["pass"] = password.as_str().into();
        }
        Auth::Token(token) => options["auth_token"] = token.as_str().into(),
        Auth::Nkey { jwt, .. } => {
            let nonce = nonce.ok_or_else(|| {
                Error::invalid_config("the server sent no nonce to sign: it is not set up for NKey or JWT users")
            })?;
            if let Some((public, sig)) = auth.nkey_fields(nonce)? {
                if let Some(public) = public {
                    options["nkey"] = public.into();
                }
                options["sig"] = sig.into();
            }
            if let Some(jwt) = jwt {
                options["jwt"] = jwt.as_str().into();
            }
        }
    }
    Ok(format!("CONNECT {options}\r\n"))
}

/// `PUB` (no headers) or `HPUB` frame of one message.
pub fn publish_frame(subject: &str, reply: &str, headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut frame;
    if headers.is_empty() {
        frame = format!("PUB {subject} {reply} {}\r\n", payload.len()).into_bytes();
    } else {
        let mut block = String::from("NATS/1.0\r\n");
        for (k, v) in headers {
            block.push_str(&format!("{k}: {v}\r\n"));
        }
        block.push_str("\r\n");
        frame = format!("HPUB {subject} {reply} {} {}\r\n", block.len(), block.len() + payload.len()).into_bytes();
        frame.extend_from_slice(block.as_bytes());
    }
    frame.reserve(payload.len() + 2);
    frame.extend_from_slice(payload);
    frame.extend_from_slice(b"\r\n");
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(wire: &[u8]) -> Vec<Op> {
        let mut r = wire;
        let mut out = Vec::new();
        while !r.is_empty() {
            out.push(read_op(&mut r).unwrap());
        }
        out
    }

    #[test]
    fn reads_the_servers_operations() {
        let wire = b"INFO {\"server_id\":\"X\",\"headers\":true}\r\nPING\r\n+OK\r\n-ERR 'Authorization Violation'\r\n\
MSG _INBOX.a.1 1 5\r\nhello\r\nMSG s 2 reply.to 0\r\n\r\n";
        let got = ops(wire);
        assert_eq!(got[0], Op::Info("{\"server_id\":\"X\",\"headers\":true}".into()));
        assert_eq!(got[1..3], [Op::Ping, Op::Ok]);
        assert_eq!(got[3], Op::Err("Authorization Violation".into()));
        let Op::Msg(m) = &got[4] else { panic!("{got:?}") };
        assert_eq!(
            (m.subject.as_str(), m.sid.as_str(), m.reply.as_deref(), &m.payload[..]),
            ("_INBOX.a.1", "1", None, &b"hello"[..])
        );
        let Op::Msg(m) = &got[5] else { panic!("{got:?}") };
        assert_eq!((m.reply.as_deref(), m.payload.len()), (Some("reply.to"), 0));
        let info: ServerInfo =
            serde_json::from_str(r#"{"server_id":"X","headers":true,"max_payload":1048576}"#).unwrap();
        assert!(info.headers && !info.auth_required && info.max_payload == 1 << 20);
    }

    #[test]
    fn reads_headers_and_statuses() {
        let wire = b"HMSG _INBOX.a.2 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\nHMSG r 1 x 31 34\r\nNATS/1.0\r\nNats-Sequence: 42\r\n\r\nabc\r\n";
        let got = ops(wire);
        let Op::Msg(m) = &got[0] else { panic!("{got:?}") };
        assert_eq!((m.status(), m.payload.len()), (Some(503), 0));
        let Op::Msg(m) = &got[1] else { panic!("{got:?}") };
        assert_eq!((m.reply.as_deref(), m.status(), &m.payload[..]), (Some("x"), None, &b"abc"[..]));
        assert_eq!(m.headers.as_ref().and_then(|h| h.get("nats-sequence")), Some("42"));
        let h = parse_headers(b"NATS/1.0 408 Request Timeout\r\n\r\n").unwrap();
        assert_eq!((h.status, h.description.as_str()), (Some(408), "Request Timeout"));
    }

    #[test]
    fn refuses_garbage_and_notices_a_closed_connection() {
        for wire in [&b"HTTP/1.1 400 Bad Request\r\n"[..], b"MSG a 1 x\r\n", b"MSG a 1 3\r\nabcde", b"PING"] {
            assert!(read_op(&mut &wire[..]).is_err(), "{:?}", String::from_utf8_lossy(wire));
        }
        let e = read_op(&mut &b""[..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn writes_the_clients_operations() {
        assert_eq!(publish_frame("a.b", "_INBOX.x.1", &[], b"hi"), b"PUB a.b _INBOX.x.1 2\r\nhi\r\n");
        let frame = publish_frame("m", "r", &[("Nats-Rollup", "sub")], b"{}");
        let text = String::from_utf8(frame).unwrap();
        assert_eq!(text, "HPUB m r 30 32\r\nNATS/1.0\r\nNats-Rollup: sub\r\n\r\n{}\r\n");
        let line =
            connect_line(&Auth::UserPassword { user: "u".into(), password: "p\"q".into() }, "0.1.0", None).unwrap();
        let json: serde_json::Value = serde_json::from_str(line.strip_prefix("CONNECT ").unwrap().trim_end()).unwrap();
        assert_eq!((json["user"].as_str(), json["pass"].as_str()), (Some("u"), Some("p\"q")));
        assert_eq!((json["headers"].as_bool(), json["no_responders"].as_bool()), (Some(true), Some(true)));
        assert_eq!((json["verbose"].as_bool(), json["pedantic"].as_bool()), (Some(false), Some(false)));
        assert!(connect_line(&Auth::Token("t".into()), "0", None).unwrap().contains("\"auth_token\":\"t\""));
    }

    #[test]
    fn an_nkey_signs_the_servers_nonce() {
        use base64::Engine;
        let pair = nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::User, [7; 32]).unwrap();
        let seed = pair.seed().unwrap();
        let fields = |line: String| -> serde_json::Value {
            serde_json::from_str(line.strip_prefix("CONNECT ").unwrap().trim_end()).unwrap()
        };
        let json = fields(connect_line(&Auth::Nkey { seed: seed.clone(), jwt: None }, "0", Some("n0nce")).unwrap());
        assert_eq!(json["nkey"].as_str(), Some(pair.public_key().as_str()));
        assert!(json.get("jwt").is_none());
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(json["sig"].as_str().unwrap()).unwrap();
        pair.verify(b"n0nce", &sig).expect("a signature of the nonce by the seed");
        assert!(!json.to_string().contains(&seed), "the seed went out");
        // With a JWT, the JWT names the user.
        let json = fields(connect_line(&Auth::Nkey { seed, jwt: Some("e.y.J".into()) }, "0", Some("n")).unwrap());
        assert_eq!((json["jwt"].as_str(), json.get("nkey")), (Some("e.y.J"), None));
        assert!(json["sig"].is_string());
        // No nonce: the server does not take NKeys.
        let none = connect_line(&Auth::Nkey { seed: pair.seed().unwrap(), jwt: None }, "0", None).unwrap_err();
        assert!(none.to_string().contains("nonce"), "{none}");
    }
}
