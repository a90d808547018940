// sluice's patch: std's Instant on every target. Upstream built one from
// the wall clock (chrono) on wasm32 and panicked when it stepped back;
// WASI has a monotonic clock, which std's Instant uses.
pub use std::time::Instant;
