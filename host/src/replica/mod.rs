//! Replicas: the segments of one database in one store, reached through
//! a plugin. `client` talks to the store, `plan` picks segments for a
//! restore, `compact` and `retention` keep the replica small (`recent`
//! spares a compaction fetching back what was just uploaded, `sealing`
//! encrypts what goes up and decrypts what comes back, `quota` keeps a
//! tenant within its storage quota), `task`
//! is the loop that ships and maintains one replica (`shared`: its
//! settings and what the capture loop sees of it; `spell`: how it
//! reports failures and backs off), and `lease` (the
//! decisions) with `keeper` (its I/O) keeps it to one writer.

mod catch_up;
pub mod client;
pub mod compact;
mod due;
pub mod error;
mod keeper;
pub mod lease;
pub mod plan;
mod quota;
mod recent;
pub mod retention;
mod sealing;
mod shared;
mod spell;
pub mod split;
pub mod task;

pub use client::{Listing, RemoteSegment};
pub use error::{Class, ReplicaError};
pub use plan::Target;
pub use shared::{ReplicaSettings, ReplicaShared};
pub use task::ReplicaTask;
