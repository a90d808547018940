//! Configuration: the Litestream-compatible file (`file`) and its
//! resolution into what the engine runs (`resolve`).

pub mod credentials;
pub mod file;
pub mod keys;
pub mod resolve;

pub use file::{FileConfig, default_path, parse};
pub use resolve::{DatabaseSpec, ReplicaSpec, Resolved, from_url, resolve};

/// Read and parse a config file, logging its warnings.
pub fn load(path: &std::path::Path, expand_env: bool) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
    let parsed = file::parse(&text, path, expand_env)?;
    for w in &parsed.warnings {
        tracing::warn!("{w}");
    }
    for n in &parsed.notes {
        tracing::info!("{n}");
    }
    Ok(parsed.config)
}
