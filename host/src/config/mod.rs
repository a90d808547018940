//! Configuration: the Litestream-compatible file (`file`) and its
//! resolution into what the engine runs (`resolve`).

pub mod credentials;
pub mod dirs;
pub mod file;
pub mod keys;
pub mod resolve;
pub mod socket;

pub use file::{FileConfig, default_path, parse};
pub use resolve::{DatabaseSpec, ReplicaSpec, Resolved, from_url, resolve};

/// Read and parse a config file, keeping its warnings and notes for the
/// caller to log (`Parsed::log_messages`): `replicate` reads its file before
/// logging exists, since the file's `logging:` section decides how to log.
pub fn read(path: &std::path::Path, expand_env: bool) -> anyhow::Result<file::Parsed> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
    file::parse(&text, path, expand_env)
}

impl file::Parsed {
    /// Log what parsing found: warnings, and notes at info. Logged from
    /// this module, as they always were (`sluice::config`).
    pub fn log_messages(&self) {
        for w in &self.warnings {
            tracing::warn!("{w}");
        }
        for n in &self.notes {
            tracing::info!("{n}");
        }
    }
}
