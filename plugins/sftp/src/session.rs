//! One SSH connection with its SFTP channel, on a tokio current-thread
//! runtime the instance owns: russh's session task and russh-sftp's
//! reader run on it while a call is in progress, and sleep between calls.

use crate::backend::sftp_error;
use crate::location::Location;
use crate::socket::{Readiness, Socket};
use crate::{CONNECT_TIMEOUT, REQUEST_TIMEOUT_SECS};
use russh::client::{self, AuthResult, Handle, Handler};
use russh::keys::{Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh_sftp::client::RawSftpSession;
use sluice_sdk::Error;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::runtime::Runtime;

/// SFTP extensions the server offers that the plugin uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extensions {
    /// `posix-rename@openssh.com`: a rename that replaces its target
    /// atomically (plain SFTP rename refuses to on OpenSSH).
    pub posix_rename: bool,
    /// `fsync@openssh.com`: a put is on the server's disk before it is
    /// renamed into place.
    pub fsync: bool,
}

pub struct Session {
    // Field order is drop order: the SFTP channel closes, then the SSH
    // connection, then the runtime that ran them.
    pub sftp: RawSftpSession,
    ssh: Handle<ServerCheck>,
    pub ext: Extensions,
    rt: Runtime,
}

/// Checks the server's key against `host-key` and remembers what it saw,
/// so a refusal can name the key the server offered.
struct ServerCheck {
    expected: Option<PublicKey>,
    seen: Arc<Mutex<Option<String>>>,
}

impl Handler for ServerCheck {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKey) -> Result<bool, Self::Error> {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(key.to_openssh().unwrap_or_else(|_| key.algorithm().to_string()));
        }
        Ok(self.expected.as_ref().is_none_or(|e| e.key_data() == key.key_data()))
    }
}

impl Session {
    /// Connect, check the server's key, log in and start SFTP.
    pub fn connect(at: &Location) -> Result<Session, Error> {
        let expected = at.host_key.as_deref().map(parse_host_key).transpose()?;
        let key = at.auth.key.as_deref().map(parse_private_key).transpose()?;
        let ready = Arc::new(Readiness::default());
        let park = ready.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .on_thread_park(move || park.block())
            .build()
            .map_err(|e| Error::permanent(format!("cannot start the SFTP client's runtime: {e}")))?;
        let seen = Arc::new(Mutex::new(None));
        let check = ServerCheck { expected, seen: seen.clone() };
        let opened = rt.block_on(async {
            tokio::time::timeout(CONNECT_TIMEOUT, open(at, check, key, ready)).await.unwrap_or_else(|_| {
                Err(Error::transient(format!("{}: no answer within {CONNECT_TIMEOUT:?}", at.server())))
            })
        });
        let (ssh, sftp, ext) = opened.map_err(|e| name_server_key(e, at, &seen))?;
        Ok(Session { sftp, ssh, ext, rt })
    }

    /// Run one call's work on the session's runtime.
    pub fn run<T>(&self, work: impl Future<Output = T>) -> T {
        self.rt.block_on(work)
    }

    /// Whether the SSH connection has ended (the next call reconnects).
    pub fn closed(&self) -> bool {
        self.ssh.is_closed()
    }
}

async fn open(
    at: &Location,
    check: ServerCheck,
    key: Option<PrivateKey>,
    ready: Arc<Readiness>,
) -> Result<(Handle<ServerCheck>, RawSftpSession, Extensions), Error> {
    let expected_algorithm = check.expected.as_ref().map(PublicKey::algorithm);
    let tcp = std::net::TcpStream::connect((at.host.as_str(), at.port)).map_err(|e| connect_error(at, e))?;
    let socket = Socket::new(tcp, ready).map_err(|e| Error::transient(format!("{}: {e}", at.server())))?;
    let mut config = client::Config::default();
    if let Some(expected) = &expected_algorithm {
        // Ask for the kind of key `host-key` is: a server with several
        // would otherwise offer its Ed25519 key, refused as not the one.
        // An RSA key signs with SHA-2 (OpenSSH refuses SHA-1 by default).
        config.preferred.key = std::borrow::Cow::Owned(match expected.clone().is_rsa() {
            true => {
                vec![Algorithm::Rsa { hash: Some(HashAlg::Sha512) }, Algorithm::Rsa { hash: Some(HashAlg::Sha256) }]
            }
            false => vec![expected.clone()],
        });
    }
    let config = Arc::new(config);
    let started = std::time::Instant::now();
    let mut ssh = client::connect_stream(config, socket, check).await.map_err(|e| ssh_error(at, e))?;
    let handshake = started.elapsed();
    login(at, &mut ssh, key).await?;
    sluice_sdk::debug!("{}: SSH handshake {handshake:?}, logged in after {:?}", at.server(), started.elapsed());
    let channel = ssh.channel_open_session().await.map_err(|e| ssh_error(at, e))?;
    channel.request_subsystem(true, "sftp").await.map_err(|e| ssh_error(at, e))?;
    let sftp = RawSftpSession::new(channel.into_stream());
    sftp.set_timeout(REQUEST_TIMEOUT_SECS).await;
    let version = sftp.init().await.map_err(|e| sftp_error(&format!("{}: starting SFTP", at.server()), e))?;
    let has = |name: &str| version.extensions.contains_key(name);
    let ext = Extensions { posix_rename: has("posix-rename@openssh.com"), fsync: has("fsync@openssh.com") };
    if !ext.fsync {
        sluice_sdk::warn!(
            "{}: the server cannot sync files (no fsync@openssh.com); a put is as durable as the server's own writes",
            at.server()
        );
    }
    Ok((ssh, sftp, ext))
}

/// Public key first (if given), then password (if given).
async fn login(at: &Location, ssh: &mut Handle<ServerCheck>, key: Option<PrivateKey>) -> Result<(), Error> {
    let user = at.auth.user.as_str();
    if let Some(key) = key {
        let rsa_hash = match key.algorithm().is_rsa() {
            true => ssh.best_supported_rsa_hash().await.ok().flatten().flatten().or(Some(HashAlg::Sha512)),
            false => None,
        };
        let signed = PrivateKeyWithHashAlg::new(Arc::new(key), rsa_hash);
        if ssh.authenticate_publickey(user, signed).await.map_err(|e| ssh_error(at, e))?.success() {
            return Ok(());
        }
    }
    if let Some(password) = &at.auth.password {
        let result = ssh.authenticate_password(user, password).await.map_err(|e| ssh_error(at, e))?;
        if matches!(result, AuthResult::Success) {
            return Ok(());
        }
    }
    Err(Error::access_denied(format!(
        "{}: the server refused the login; check `user`, `password` and `key-path`",
        at.server()
    )))
}

/// A refused connection: the sandbox's refusal needs an operator (the
/// server is not the URL's); the network's may heal.
fn connect_error(at: &Location, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => Error::access_denied(format!(
            "{}: the sandbox does not let this plugin reach that server ({e}); it may reach the URL's host, \
             or what `allow-hosts` names",
            at.server()
        )),
        _ => Error::transient(format!("{}: cannot connect: {e}", at.server())),
    }
}

/// A connection failure, classified: the network's are transient,
/// a refused server key needs an operator, the rest are permanent.
fn ssh_error(at: &Location, e: russh::Error) -> Error {
    let msg = format!("{}: {e}", at.server());
    match e {
        russh::Error::UnknownKey => Error::access_denied(format!("{UNKNOWN_KEY}{msg}")),
        russh::Error::IO(_)
        | russh::Error::Disconnect
        | russh::Error::HUP
        | russh::Error::ConnectionTimeout
        | russh::Error::KeepaliveTimeout
        | russh::Error::InactivityTimeout
        | russh::Error::SendError
        | russh::Error::Elapsed(_) => Error::transient(msg),
        _ => Error::permanent(msg),
    }
}

/// Marks the error of a server key `check_server_key` refused.
const UNKNOWN_KEY: &str = "unknown server key: ";

/// A refused server key, said with the key the server offered: the
/// operator compares it with the server's own and sets `host-key`.
fn name_server_key(e: Error, at: &Location, seen: &Mutex<Option<String>>) -> Error {
    let offered = seen.lock().ok().and_then(|s| s.clone());
    match (e, offered) {
        (Error::AccessDenied(m), Some(key)) if m.starts_with(UNKNOWN_KEY) => Error::access_denied(format!(
            "{}: the server's key is not `host-key`; it offered `{key}`. If that is the server's key \
             (ssh-keyscan -p {} {}), set host-key to it",
            at.server(),
            at.port,
            at.host
        )),
        (e, _) => e,
    }
}

/// `host-key`: a public key as in `authorized_keys` (`ssh-ed25519 AAAA...
/// [comment]`) or a `known_hosts` line (with the host names first).
fn parse_host_key(line: &str) -> Result<PublicKey, Error> {
    let line = line.trim();
    let without_hosts = line.split_once(char::is_whitespace).map_or("", |(_, rest)| rest.trim_start());
    PublicKey::from_openssh(line).or_else(|_| PublicKey::from_openssh(without_hosts)).map_err(|e| {
        Error::invalid_config(format!(
            "host-key is not a public key (`ssh-ed25519 AAAA...`, as in known_hosts or ssh-keyscan's output): {e}"
        ))
    })
}

/// The private key's text (`key`, or the file `key-path` names).
fn parse_private_key(text: &str) -> Result<PrivateKey, Error> {
    russh::keys::decode_secret_key(text, None).map_err(|e| match e {
        russh::keys::Error::KeyIsEncrypted => Error::invalid_config(
            "the private key is encrypted; give a key without a passphrase (ssh-keygen -p -N '' -f KEY on a copy)",
        ),
        e => Error::invalid_config(format!("the private key cannot be read (OpenSSH or PEM expected): {e}")),
    })
}
