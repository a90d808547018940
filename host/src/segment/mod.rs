//! Segments: the unit sluice stores. The format is specified in
//! FORMAT.md beside this file.

pub mod apply;
pub mod format;
pub mod reader;
pub mod sealed;
pub mod writer;

pub use format::{FormatError, Header, SNAPSHOT_LEVEL, SegmentName};
pub use reader::SegmentReader;
pub use writer::SegmentWriter;
