//! Thumbnails for media-repo: which thumbnail a request gets ([`geometry`]). Pure: no
//! I/O, no HTTP, no storage, no async.

pub mod error;
pub mod geometry;

pub use error::{Error, Result};
pub use geometry::{plan, Method, Plan, Rect};
