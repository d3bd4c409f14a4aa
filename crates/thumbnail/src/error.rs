//! Why a thumbnail could not be made. The web layer maps these to Matrix errors in one
//! place: `TooLarge` → 413 `M_TOO_LARGE`; everything else → 400 `M_UNKNOWN`.

/// A failed probe or render.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The source is bigger than the limits allow, in bytes or in pixels. Found before any
    /// pixel buffer is allocated.
    #[error("image too large to thumbnail: {0}")]
    TooLarge(String),
    /// The bytes are not an image we recognise (text, an archive, an empty body).
    #[error("not an image")]
    NotAnImage,
    /// A recognised image format we do not thumbnail (SVG, TIFF, BMP, AVIF, HEIC, …).
    #[error("unsupported image format: {0}")]
    Unsupported(&'static str),
    /// The header looked right but the image could not be decoded (truncated, corrupt).
    #[error("undecodable image: {0}")]
    Undecodable(String),
    /// The request itself is unusable (a zero width or height).
    #[error("invalid thumbnail request: {0}")]
    InvalidRequest(&'static str),
    /// Encoding the thumbnail failed; not expected for any input.
    #[error("encoding the thumbnail failed: {0}")]
    Encode(String),
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;
