//! Pure thumbnail geometry: which part of the source is used and how big the output is.
//! No I/O, no pixels; every rule of "which thumbnail" lives here.
//!
//! * `Scale` fits the source inside the asked box, keeping its aspect ratio.
//! * `Crop` fills the asked box: the largest centred rectangle of the asked aspect ratio
//!   is cut from the source and scaled to the asked size.
//! * Never upscaled: where the source (or the crop rectangle) is smaller than asked,
//!   `Scale` returns the source size and `Crop` returns the crop rectangle's size (80×200
//!   asked as a 96×96 crop → 80×80).
//!
//! Rounding: the dimension that is not pinned to the asked box is rounded to the nearest
//! integer, halves away from zero, and is never less than 1. Crop offsets are rounded
//! down (centred, with an odd leftover pixel on the right or bottom). All arithmetic is
//! integer (u128), so results are the same on every platform.

/// How the source is fitted, as in the spec's `method` parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// Fill exactly the asked size, cutting off what sticks out.
    Crop,
    /// Fit inside the asked size, keeping the aspect ratio.
    Scale,
}

/// A rectangle of source pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// The outcome of [`plan`]: cut `crop` out of the source and resize it to
/// `width` × `height`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub crop: Rect,
    pub width: u32,
    pub height: u32,
}

/// `a * b / c` rounded to nearest (halves up), at least 1. `c` must not be 0.
fn mul_div_round(a: u32, b: u32, c: u32) -> u32 {
    let (a, b, c) = (u128::from(a), u128::from(b), u128::from(c));
    let v = (2 * a * b + c) / (2 * c);
    // v ≤ a * b / c + 1 and callers pass b ≤ c or a result bounded by a source side,
    // so it fits; clamp anyway rather than wrap.
    u32::try_from(v).unwrap_or(u32::MAX).max(1)
}

/// Plans a thumbnail of a `src_w` × `src_h` source (already rotated by its EXIF
/// orientation) asked at `want_w` × `want_h` with `method`. All four sizes must be ≥ 1
/// (the caller validates requests; see [`crate::Request`]).
pub fn plan(src_w: u32, src_h: u32, want_w: u32, want_h: u32, method: Method) -> Plan {
    debug_assert!(src_w > 0 && src_h > 0 && want_w > 0 && want_h > 0);
    let whole = Rect {
        x: 0,
        y: 0,
        width: src_w,
        height: src_h,
    };
    match method {
        Method::Scale => {
            if src_w <= want_w && src_h <= want_h {
                return Plan {
                    crop: whole,
                    width: src_w,
                    height: src_h,
                };
            }
            // Compare src_w / src_h with want_w / want_h without division: the side whose
            // ratio to the box is larger is pinned to the box.
            let (width, height) =
                if u64::from(src_w) * u64::from(want_h) >= u64::from(src_h) * u64::from(want_w) {
                    (want_w, mul_div_round(src_h, want_w, src_w))
                } else {
                    (mul_div_round(src_w, want_h, src_h), want_h)
                };
            Plan {
                crop: whole,
                width,
                height,
            }
        }
        Method::Crop => {
            let (cw, ch) =
                if u64::from(src_w) * u64::from(want_h) > u64::from(src_h) * u64::from(want_w) {
                    // Source wider than asked: full height, cut the sides.
                    (mul_div_round(src_h, want_w, want_h).min(src_w), src_h)
                } else {
                    // Source taller (or same ratio): full width, cut top and bottom.
                    (src_w, mul_div_round(src_w, want_h, want_w).min(src_h))
                };
            let crop = Rect {
                x: (src_w - cw) / 2,
                y: (src_h - ch) / 2,
                width: cw,
                height: ch,
            };
            let (width, height) = if cw >= want_w && ch >= want_h {
                (want_w, want_h)
            } else {
                (cw, ch)
            };
            Plan {
                crop,
                width,
                height,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(src: (u32, u32), want: (u32, u32), m: Method) -> (u32, u32) {
        let p = plan(src.0, src.1, want.0, want.1, m);
        (p.width, p.height)
    }

    #[test]
    fn issue_examples() {
        assert_eq!(out((20, 20), (96, 96), Method::Crop), (20, 20));
        assert_eq!(out((80, 200), (96, 96), Method::Crop), (80, 80));
        assert_eq!(out((1000, 500), (800, 600), Method::Crop), (667, 500));
        let p = plan(80, 200, 96, 96, Method::Crop);
        assert_eq!(
            p.crop,
            Rect {
                x: 0,
                y: 60,
                width: 80,
                height: 80
            }
        );
        let p = plan(1000, 500, 800, 600, Method::Crop);
        assert_eq!(
            p.crop,
            Rect {
                x: 166,
                y: 0,
                width: 667,
                height: 500
            }
        );
    }

    /// The semantics table: landscape, portrait and square sources × the default
    /// configured sizes × crop/scale, plus sizes between and above the configured ones.
    #[test]
    fn semantics_table() {
        use Method::{Crop, Scale};
        let landscape = (4000, 3000);
        let wide = (1920, 1080);
        let portrait = (1080, 1920);
        let square = (1000, 1000);
        let small = (50, 40);
        #[rustfmt::skip]
        type Row = ((u32, u32), (u32, u32), Method, (u32, u32));
        let table: &[Row] = &[
            // configured sizes
            (landscape, (32, 32), Crop, (32, 32)),
            (landscape, (32, 32), Scale, (32, 24)),
            (landscape, (96, 96), Crop, (96, 96)),
            (landscape, (96, 96), Scale, (96, 72)),
            (landscape, (320, 240), Scale, (320, 240)),
            (landscape, (320, 240), Crop, (320, 240)),
            (landscape, (640, 480), Scale, (640, 480)),
            (landscape, (800, 600), Scale, (800, 600)),
            (wide, (32, 32), Crop, (32, 32)),
            (wide, (96, 96), Scale, (96, 54)),
            (wide, (320, 240), Scale, (320, 180)),
            (wide, (320, 240), Crop, (320, 240)),
            (wide, (640, 480), Scale, (640, 360)),
            (wide, (800, 600), Scale, (800, 450)),
            (wide, (800, 600), Crop, (800, 600)),
            (portrait, (32, 32), Crop, (32, 32)),
            (portrait, (96, 96), Crop, (96, 96)),
            (portrait, (96, 96), Scale, (54, 96)),
            (portrait, (320, 240), Scale, (135, 240)),
            (portrait, (320, 240), Crop, (320, 240)),
            (portrait, (640, 480), Scale, (270, 480)),
            (portrait, (800, 600), Scale, (338, 600)),
            (portrait, (800, 600), Crop, (800, 600)),
            (square, (32, 32), Crop, (32, 32)),
            (square, (32, 32), Scale, (32, 32)),
            (square, (96, 96), Crop, (96, 96)),
            (square, (320, 240), Scale, (240, 240)),
            (square, (320, 240), Crop, (320, 240)),
            (square, (640, 480), Scale, (480, 480)),
            (square, (800, 600), Scale, (600, 600)),
            (square, (800, 600), Crop, (800, 600)),
            // between the configured sizes
            (landscape, (200, 150), Scale, (200, 150)),
            (wide, (500, 500), Scale, (500, 281)),
            (portrait, (400, 300), Crop, (400, 300)),
            (square, (64, 48), Crop, (64, 48)),
            // above the configured sizes: still exact, never above the source
            (landscape, (1600, 1200), Scale, (1600, 1200)),
            (wide, (2560, 1440), Scale, (1920, 1080)),
            (wide, (1000, 1000), Crop, (1000, 1000)),
            (wide, (3000, 3000), Crop, (1080, 1080)),
            (portrait, (2000, 2000), Scale, (1080, 1920)),
            (square, (1200, 900), Crop, (1000, 750)),
            // a source smaller than asked
            (small, (96, 96), Crop, (40, 40)),
            (small, (96, 96), Scale, (50, 40)),
            (small, (32, 32), Scale, (32, 26)),
        ];
        for &(src, want, m, expect) in table {
            assert_eq!(out(src, want, m), expect, "{src:?} asked {want:?} {m:?}");
        }
    }

    #[test]
    fn extreme_ratios_never_reach_zero() {
        assert_eq!(out((10000, 1), (96, 96), Method::Scale), (96, 1));
        assert_eq!(out((1, 10000), (96, 96), Method::Crop), (1, 1));
        assert_eq!(out((1, 1), (1, 65535), Method::Crop), (1, 1));
        assert_eq!(
            out((u32::MAX, u32::MAX - 1), (u32::MAX, 1), Method::Crop),
            (u32::MAX, 1)
        );
    }

    #[test]
    fn crop_rect_stays_inside_source() {
        for sw in [1u32, 2, 3, 7, 80, 99, 1000] {
            for sh in [1u32, 2, 5, 80, 200, 501] {
                for (ww, wh) in [(1, 1), (32, 32), (96, 96), (320, 240), (7, 300)] {
                    for m in [Method::Crop, Method::Scale] {
                        let p = plan(sw, sh, ww, wh, m);
                        assert!(p.crop.x + p.crop.width <= sw);
                        assert!(p.crop.y + p.crop.height <= sh);
                        assert!(p.width >= 1 && p.height >= 1);
                        assert!(p.width <= p.crop.width && p.height <= p.crop.height);
                        assert!(p.width <= ww.max(1) && p.height <= wh.max(1));
                    }
                }
            }
        }
    }
}
