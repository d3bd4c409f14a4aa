//! The `Range` request header: one `bytes=` range, or the whole file.
//!
//! Several ranges, other units and malformed values are ignored (RFC 9110 lets a server
//! answer 200 with the whole representation); a well-formed range that lies past the end is
//! unsatisfiable (416).

/// What part of a `size`-byte file to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    Whole,
    /// Inclusive bounds, `start <= end < size`.
    Part {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

impl ByteRange {
    pub fn parse(header: Option<&str>, size: u64) -> ByteRange {
        let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
            return ByteRange::Whole;
        };
        if spec.contains(',') {
            return ByteRange::Whole;
        }
        let Some((first, last)) = spec.trim().split_once('-') else {
            return ByteRange::Whole;
        };
        let parse = |s: &str| -> Option<Option<u64>> {
            let s = s.trim();
            if s.is_empty() {
                Some(None)
            } else if s.bytes().all(|b| b.is_ascii_digit()) {
                s.parse().ok().map(Some)
            } else {
                None
            }
        };
        let (Some(first), Some(last)) = (parse(first), parse(last)) else {
            return ByteRange::Whole;
        };
        match (first, last) {
            (None, None) => ByteRange::Whole,
            // suffix: the last `n` bytes
            (None, Some(n)) => {
                if n == 0 || size == 0 {
                    ByteRange::Unsatisfiable
                } else {
                    ByteRange::Part {
                        start: size.saturating_sub(n),
                        end: size - 1,
                    }
                }
            }
            (Some(start), last) => {
                if let Some(last) = last {
                    if last < start {
                        return ByteRange::Whole;
                    }
                }
                if start >= size {
                    return ByteRange::Unsatisfiable;
                }
                let end = last.map_or(size - 1, |l| l.min(size - 1));
                ByteRange::Part { start, end }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ByteRange::{self, *};

    #[test]
    fn ranges() {
        assert_eq!(ByteRange::parse(None, 10), Whole);
        assert_eq!(
            ByteRange::parse(Some("bytes=0-0"), 10),
            Part { start: 0, end: 0 }
        );
        assert_eq!(
            ByteRange::parse(Some("bytes=2-"), 10),
            Part { start: 2, end: 9 }
        );
        assert_eq!(
            ByteRange::parse(Some("bytes=-3"), 10),
            Part { start: 7, end: 9 }
        );
        assert_eq!(
            ByteRange::parse(Some("bytes=-30"), 10),
            Part { start: 0, end: 9 }
        );
        assert_eq!(
            ByteRange::parse(Some("bytes=5-100"), 10),
            Part { start: 5, end: 9 }
        );
        assert_eq!(ByteRange::parse(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(ByteRange::parse(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(ByteRange::parse(Some("bytes=-0"), 10), Unsatisfiable);
    }

    #[test]
    fn malformed_or_multiple_means_whole() {
        for h in [
            "bytes=a-b",
            "bytes=5-2",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=",
            "bytes=1",
            "bytes=--1",
            "bytes=+1-2",
        ] {
            assert_eq!(ByteRange::parse(Some(h), 10), Whole, "{h}");
        }
    }
}
