//! The control socket (Litestream 0.5's `socket:`): a running `replicate`
//! answers `info`, `list`, `txid`, `sync`, `start`, `stop`, `register` and
//! `unregister` over HTTP on a Unix socket, and the CLI commands of the
//! same names ask it.

pub mod api;
pub mod client;
mod server;

pub use server::serve;
