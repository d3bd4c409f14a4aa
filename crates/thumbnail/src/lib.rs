//! Thumbnails for media-repo: which thumbnail a request gets ([`geometry`]) and what a
//! source is and whether it may be decoded at all ([`probe`]). Pure: no I/O, no HTTP, no
//! storage, no async. [`probe`] is blocking; callers run it on a bounded blocking pool.

pub mod error;
pub mod geometry;
pub mod probe;

pub use error::{Error, Result};
pub use geometry::{plan, Method, Plan, Rect};
pub use probe::{probe, sniff, Format, Limits, SourceInfo};
