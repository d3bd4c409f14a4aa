//! Thumbnails for media-repo: which thumbnail a request gets ([`geometry`]), what a
//! source is and whether it may be decoded at all ([`mod@probe`]), and the pixels
//! ([`render`]). Pure: no I/O, no HTTP, no storage, no async. [`fn@probe`] and
//! [`thumbnail`] are blocking and CPU-bound; callers run them on a bounded blocking pool.

mod error;
mod geometry;
mod probe;
mod render;
mod split_jpeg;
mod stream;

pub use error::{Error, Result};
pub use geometry::{plan, Method, Plan, Rect};
pub use probe::{probe, sniff, Format, Limits, SourceInfo};
pub use render::{
    shared_decodes, thumbnail, thumbnails, thumbnails_each, Request, Thumbnail, JPEG_QUALITY,
    MAX_ANIMATED_FRAMES, MAX_ANIMATED_SOURCE_PIXELS,
};
pub use stream::{thumbnails_each_streaming, Decoded};
