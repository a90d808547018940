//! OpenSSH's sshd (Debian's `openssh-server`) on 127.0.0.1 for the SFTP
//! tests: its own host key, a client key for the user running the tests
//! (`AuthorizedKeysFile` in its directory), and a password user
//! (`PASSWORD_USER`), created once when the tests run as root, as in CI.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A system user that logs in with `PASSWORD` (created by `password_user`).
pub const PASSWORD_USER: &str = "sluice-sftp";
pub const PASSWORD: &str = "sftp-test-secret";

const SSHD: &str = "/usr/sbin/sshd";

/// A running `sshd -D`, stopped when dropped. Files live below `files`.
pub struct Sshd {
    pub port: u16,
    child: Child,
    pub dir: tempfile::TempDir,
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(path).output();
    let out = out.expect("ssh-keygen (openssh-client) is needed for the SFTP tests");
    assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
}

impl Sshd {
    pub fn start() -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "the SFTP tests need OpenSSH's server: apt-get install -y openssh-server (as .ci/run does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("host_ed25519"));
        keygen(&d.join("client_ed25519"));
        keygen(&d.join("other_ed25519"));
        std::fs::copy(d.join("client_ed25519.pub"), d.join("authorized_keys")).unwrap();
        std::fs::create_dir(d.join("files")).unwrap();
        // Privilege separation wants this directory; it is root's to make.
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n\
             UsePAM no\nStrictModes no\nPermitRootLogin yes\nSubsystem sftp internal-sftp\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        super::wait_for_port(port, "sshd", Duration::from_secs(30));
        Sshd { port, child, dir }
    }

    /// The directory replicas go to, as the server sees it.
    pub fn files(&self) -> PathBuf {
        self.dir.path().join("files")
    }

    /// The client's private key file (authorized for `user()`).
    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("client_ed25519")
    }

    /// A key the server does not authorize.
    pub fn other_key_path(&self) -> PathBuf {
        self.dir.path().join("other_ed25519")
    }

    /// The server's public key, as `ssh-keyscan` prints it.
    pub fn host_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host_ed25519.pub")).unwrap().trim().to_string()
    }

    /// Another key (a server impersonating this one would offer it).
    pub fn other_host_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("other_ed25519.pub")).unwrap().trim().to_string()
    }

    /// `sftp://USER@127.0.0.1:PORT/<files>/path` for the user running the
    /// tests, who logs in with `key_path()`.
    pub fn key_url(&self, path: &str) -> String {
        format!("sftp://{}@127.0.0.1:{}{}/{path}", user(), self.port, self.files().display())
    }

    /// `sftp://PASSWORD_USER:PASSWORD@127.0.0.1:PORT/<files>/path`, below a
    /// directory that user owns.
    pub fn password_url(&self, path: &str) -> String {
        let uid = password_user();
        let own = self.files().join(PASSWORD_USER);
        if !own.exists() {
            std::fs::create_dir(&own).unwrap();
            std::os::unix::fs::chown(&own, Some(uid), None).unwrap();
            // The user must be able to reach it through the temporary directory.
            for dir in [self.dir.path(), &self.files()] {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        format!("sftp://{PASSWORD_USER}:{PASSWORD}@127.0.0.1:{}{}/{path}", self.port, own.display())
    }

    /// What sshd logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The user running the tests.
pub fn user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `PASSWORD_USER`'s uid, creating the user (no home, no shell) with
/// `PASSWORD` if it does not exist; that needs root.
fn password_user() -> u32 {
    let uid = || {
        let out = Command::new("id").args(["-u", PASSWORD_USER]).output().unwrap();
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().unwrap())
    };
    if let Some(uid) = uid() {
        return uid;
    }
    let made = Command::new("useradd").args(["-M", "-s", "/usr/sbin/nologin", PASSWORD_USER]).status();
    assert!(
        made.is_ok_and(|s| s.success()) || uid().is_some(),
        "the SFTP password test needs the user {PASSWORD_USER}: run the tests as root (as CI does) to create it"
    );
    let mut chpasswd = Command::new("chpasswd").stdin(Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    writeln!(chpasswd.stdin.take().unwrap(), "{PASSWORD_USER}:{PASSWORD}").unwrap();
    assert!(chpasswd.wait().unwrap().success(), "chpasswd failed");
    uid().expect("the user just created")
}

/// A TCP forwarder on 127.0.0.1 to `upstream` whose answers each wait
/// `delay` (a far or slow server); it stops accepting when dropped.
pub struct SlowLink {
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SlowLink {
    pub fn start(upstream: u16, delay: Duration) -> SlowLink {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pipe(c2, s2, Duration::ZERO));
                std::thread::spawn(move || pipe(server, client, delay));
            }
        });
        SlowLink { port, stop }
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copy `from` to `to`, each read held back `delay`.
fn pipe(mut from: std::net::TcpStream, mut to: std::net::TcpStream, delay: Duration) {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        std::thread::sleep(delay);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}
