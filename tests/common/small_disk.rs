//! A small tmpfs for tests of full and read-only disks (root only).

use std::path::Path;
use std::process::Command;

/// A tmpfs of `mb` MB mounted at a new directory, unmounted when dropped.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` when this process may not mount (not root): said, not hidden.
    pub fn mount(mb: u64) -> Option<SmallDisk> {
        SmallDisk::mount_with(&format!("size={mb}m"))
    }

    /// A tmpfs mounted with `options` (`mount -o`).
    pub fn mount_with(options: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Not root, or a container without CAP_SYS_ADMIN: said loudly.
            eprintln!("SKIPPED: this test needs to mount a small tmpfs (root with CAP_SYS_ADMIN)");
            return None;
        }
        Some(SmallDisk { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn free(&self) -> u64 {
        let out = Command::new("df").args(["-B1", "--output=avail"]).arg(self.path()).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().trim().parse().unwrap()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}
