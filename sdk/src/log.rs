//! Logging into the host's `tracing`: the host tags each line with the
//! plugin, database and replica, so plugins only write the message.

pub use crate::bindings::sluice::storage::log::Level;

/// Write one line to the host's log. Never include secrets.
pub fn emit(level: Level, message: &str) {
    crate::bindings::sluice::storage::log::emit(level, message);
}

/// `sluice_sdk::debug!("...", args)`: a debug line in the host log.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::emit($crate::log::Level::Debug, &format!($($arg)*)) };
}

/// `sluice_sdk::info!("...", args)`: an info line in the host log.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::emit($crate::log::Level::Info, &format!($($arg)*)) };
}

/// `sluice_sdk::warn!("...", args)`: a warning in the host log.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::emit($crate::log::Level::Warn, &format!($($arg)*)) };
}
