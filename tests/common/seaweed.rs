//! A SeaweedFS S3 server for the tests (tests/s3/start-seaweedfs.sh), with
//! the test identity's keys and bucket.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "sluice-test";
pub const SECRET_KEY: &str = "sluice-test-secret";
pub const BUCKET: &str = "sluice-test";

/// A SeaweedFS S3 server on 127.0.0.1, stopped (its whole process group)
/// when dropped.
pub struct Seaweed {
    pub port: u16,
    pid: Option<i32>,
    /// Removed after the server is stopped (fields drop after `drop`).
    _dir: tempfile::TempDir,
}

/// Whether every port the script will use is free right now.
fn ports_free(port: u16) -> bool {
    (0..=5).chain(10000..=10005).all(|off| TcpListener::bind(("127.0.0.1", port + off)).is_ok())
}

impl Seaweed {
    pub fn start() -> Seaweed {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/s3/start-seaweedfs.sh");
        let mut last_err = String::new();
        for _ in 0..5 {
            // 12000..22000: the helper ports (+1..+5, +10000..+10005) stay
            // below Linux's ephemeral range, so outgoing connections do not
            // take them while the server starts.
            let port = (0..50)
                .map(|_| 12000 + (rand::random::<u16>() % 10000))
                .find(|&p| ports_free(p))
                .expect("no free port range");
            let dir = tempfile::tempdir().unwrap();
            let out = Command::new("bash")
                .arg(&script)
                .arg(port.to_string())
                .arg(dir.path().join("weed"))
                .output()
                .expect("run start-seaweedfs.sh");
            let pid =
                std::fs::read_to_string(dir.path().join("weed/weed.pid")).ok().and_then(|s| s.trim().parse().ok());
            let server = Seaweed { port, pid, _dir: dir };
            if out.status.success() && pid.is_some() {
                return server;
            }
            last_err = format!("port {port}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
            drop(server);
        }
        panic!("could not start SeaweedFS: {last_err}");
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The replica URL for `prefix`, MinIO style (`?endpoint=`).
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}?endpoint={}", self.endpoint())
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        let Some(pid) = self.pid else { return };
        // SAFETY: signalling the process group the script started with setsid.
        unsafe {
            libc::kill(-pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        // SAFETY: signal 0 only checks that the process still exists.
        while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}
