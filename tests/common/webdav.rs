//! A wsgidav server (`pip install wsgidav cheroot`) on 127.0.0.1 for the
//! WebDAV tests, with Basic authentication.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const USER: &str = "sluice";
pub const PASSWORD: &str = "dav-secret";

/// A running wsgidav serving a temporary directory, stopped when dropped.
pub struct WebDav {
    pub port: u16,
    child: Child,
    pub root: tempfile::TempDir,
}

impl WebDav {
    pub fn start() -> WebDav {
        let root = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = root.path().join("dav.yaml");
        let data = root.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let yaml = format!(
            "host: 127.0.0.1\nport: {port}\nprovider_mapping:\n  \"/\": {}\nhttp_authenticator:\n  accept_basic: true\n  accept_digest: false\n  default_to_digest: false\nsimple_dc:\n  user_mapping:\n    \"*\":\n      \"{USER}\":\n        password: \"{PASSWORD}\"\nverbose: 1\nlogging:\n  enable: false\n",
            data.display()
        );
        std::fs::write(&config, yaml).unwrap();
        let child = wsgidav()
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wsgidav");
        let server = WebDav { port, child, root };
        super::wait_for_port(port, "wsgidav", Duration::from_secs(30));
        server
    }

    /// `webdav://USER:PASSWORD@127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("webdav://{USER}:{PASSWORD}@127.0.0.1:{}/{path}", self.port)
    }
}

/// `wsgidav` from PATH, else installed from PyPI under target/wsgidav on
/// first use (as the S3 tests install SeaweedFS).
fn wsgidav() -> Command {
    if Command::new("wsgidav").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Command::new("wsgidav");
    }
    let bin = super::pip_target("wsgidav", &["wsgidav", "cheroot"], "bin/wsgidav");
    let mut cmd = Command::new("python3");
    cmd.arg(&bin).env("PYTHONPATH", bin.parent().and_then(|b| b.parent()).expect("target/wsgidav"));
    cmd
}

impl Drop for WebDav {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
