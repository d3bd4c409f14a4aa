//! Coefficients to pixels: a scaled IDCT (N×N outputs from the top-left N×N
//! coefficients, N = 1, 2, 4 or 8) into one plane per component, then upsampling of
//! subsampled planes and YCbCr → RGB. Upsampling and colour follow jpeg-decoder's choices
//! (libjpeg's "fancy" triangle filter for 2× ratios, JFIF coefficients) so the pixels stay
//! close to the decoder this one stands in for.

use super::entropy::Layout;
use super::header::Header;
use super::threads;
use super::Image;
use crate::error::{Error, Result};

/// Fixed-point bits of the colour conversion.
const COLOR_SHIFT: u32 = 16;

/// One decoded component plane, MCU-padded.
struct Plane {
    pixels: Vec<u8>,
    stride: usize,
    /// Size of the part that is image (jpeg-decoder's component size at this scale).
    width: usize,
    height: usize,
    /// Upsampling factors to the output (1 or 2).
    up_x: usize,
    up_y: usize,
}

/// Turns all coefficients into the output image, on up to `threads` threads (each takes
/// a band of MCU rows for the IDCT, then a band of output rows for colour).
pub(super) fn render(
    header: &Header,
    layout: &Layout,
    coefs: &[i16],
    eighths: u32,
    threads: usize,
) -> Result<Image> {
    let n = layout.n;
    let (w, h) = (u64::from(header.width), u64::from(header.height));
    let out_w = (w * u64::from(eighths)).div_ceil(8) as usize;
    let out_h = (h * u64::from(eighths)).div_ceil(8) as usize;
    let hmax = header.components.iter().map(|c| c.h).max().unwrap_or(1);
    let vmax = header.components.iter().map(|c| c.v).max().unwrap_or(1);
    let idct = Idct {
        basis: basis(n),
        quant: header
            .components
            .iter()
            .map(|c| dequantiser(&header.quant[c.quant], layout))
            .collect(),
    };
    let mut planes: Vec<Plane> = header
        .components
        .iter()
        .map(|comp| {
            let stride = layout.mcus_x * comp.h * n;
            let size = |side: u64, factor: usize, max: usize| {
                (side * factor as u64 * u64::from(eighths)).div_ceil(max as u64 * 8) as usize
            };
            let up = |factor: usize, max: usize, out: usize| {
                if factor < max && out != 1 {
                    2
                } else {
                    1
                }
            };
            Plane {
                pixels: vec![0u8; stride * layout.mcus_y * comp.v * n],
                stride,
                width: size(w, comp.h, hmax).max(1),
                height: size(h, comp.v, vmax).max(1),
                up_x: up(comp.h, hmax, out_w),
                up_y: up(comp.v, vmax, out_h),
            }
        })
        .collect();

    // IDCT: MCU rows [0, mid) here, [mid, end) on the second thread.
    let mid = if threads > 1 {
        layout.mcus_y / 2
    } else {
        layout.mcus_y
    };
    let strides: Vec<usize> = planes.iter().map(|p| p.stride).collect();
    let mut low: Vec<&mut [u8]> = Vec::with_capacity(planes.len());
    let mut high: Vec<&mut [u8]> = Vec::with_capacity(planes.len());
    for (plane, comp) in planes.iter_mut().zip(&header.components) {
        let (a, b) = plane.pixels.split_at_mut(mid * comp.v * n * plane.stride);
        low.push(a);
        high.push(b);
    }
    let band = |rows: std::ops::Range<usize>, out: &mut [&mut [u8]]| {
        idct_band(header, layout, coefs, &idct, &strides, rows, out)
    };
    let (first, second) = std::thread::scope(|s| {
        let second = (mid < layout.mcus_y)
            .then(|| threads::spawn_or_none(s, || band(mid..layout.mcus_y, &mut high)));
        let first = band(0..mid, &mut low);
        (first, second.map(|h| h.map(|h| h.join())))
    });
    first?;
    match second {
        Some(Some(joined)) => {
            joined.map_err(|_| Error::Undecodable("IDCT thread panicked".into()))??;
        }
        // The OS gave no second thread: its rows on this one.
        Some(None) => band(mid..layout.mcus_y, &mut high)?,
        None => {}
    }

    // Upsampling and colour: output rows [0, split) here, the rest on the second thread.
    let components = planes.len();
    let row_bytes = out_w * components;
    let mut pixels = vec![0u8; row_bytes * out_h];
    let split = if threads > 1 { out_h / 2 } else { out_h };
    let (top, bottom) = pixels.split_at_mut(split * row_bytes);
    let planes = &planes;
    let bottom_empty = bottom.is_empty();
    let bottom_done = std::thread::scope(|s| {
        let helper = if bottom_empty {
            None
        } else {
            let rows = &mut *bottom;
            threads::spawn_or_none(s, move || colour_rows(planes, out_w, split, rows))
        };
        colour_rows(planes, out_w, 0, top);
        bottom_empty || helper.is_some()
    });
    if !bottom_done {
        colour_rows(planes, out_w, split, bottom);
    }
    Ok(Image {
        width: out_w as u32,
        height: out_h as u32,
        components: components as u8,
        pixels,
    })
}

/// The dequantisation and IDCT weights of one image.
struct Idct {
    basis: Vec<f32>,
    /// Per component (frame order), in slot order.
    quant: Vec<Vec<f32>>,
}

/// IDCT of the MCU rows `rows` into `out` (per component, the plane from the band's
/// first row on).
fn idct_band(
    header: &Header,
    layout: &Layout,
    coefs: &[i16],
    idct: &Idct,
    strides: &[usize],
    rows: std::ops::Range<usize>,
    out: &mut [&mut [u8]],
) -> Result<()> {
    let n = layout.n;
    for my in rows.clone() {
        for mx in 0..layout.mcus_x {
            let mcu = my * layout.mcus_x + mx;
            let start = mcu * layout.bpm * layout.slots;
            let blocks = coefs
                .get(start..start + layout.bpm * layout.slots)
                .ok_or_else(|| Error::Undecodable("JPEG coefficients missing".into()))?;
            for (b, block) in blocks.chunks_exact(layout.slots).enumerate() {
                let c = layout.block_comp[b];
                let comp = &header.components[c];
                let (col, row) = layout.block_at[b];
                let (bx, by) = (mx * comp.h + col, (my - rows.start) * comp.v + row);
                let origin = by * n * strides[c] + bx * n;
                let plane = &mut out[c][origin..];
                idct_block(block, &idct.quant[c], &idct.basis, n, plane, strides[c]);
            }
        }
    }
    Ok(())
}

/// Upsamples and converts output rows from `first` on into `out`.
fn colour_rows(planes: &[Plane], out_w: usize, first: usize, out: &mut [u8]) {
    let components = planes.len();
    let mut rows: Vec<Vec<u8>> = planes
        .iter()
        .map(|p| vec![0u8; 2 * p.width.max(out_w)])
        .collect();
    for (i, line) in out.chunks_exact_mut(out_w * components).enumerate() {
        for (plane, row) in planes.iter().zip(rows.iter_mut()) {
            plane.row(first + i, row);
        }
        if components == 1 {
            line.copy_from_slice(&rows[0][..out_w]);
        } else {
            ycbcr_to_rgb(
                &rows[0][..out_w],
                &rows[1][..out_w],
                &rows[2][..out_w],
                line,
            );
        }
    }
}

impl Plane {
    /// Output row `y` of this component, upsampled, into `out` (at least the output
    /// width; 2 × `width` when upsampled horizontally).
    fn row(&self, y: usize, out: &mut [u8]) {
        let last = self.height - 1;
        let line = |r: usize| {
            let start = r.min(last) * self.stride;
            &self.pixels[start..start + self.width]
        };
        let near = line(y / self.up_y);
        if self.up_y == 1 {
            if self.up_x == 1 {
                out[..self.width].copy_from_slice(near);
            } else {
                upsample_h2(near, out);
            }
            return;
        }
        // Vertical triangle filter: 3/4 of the nearer source row, 1/4 of the other.
        let far = if y.is_multiple_of(2) {
            line((y / 2).saturating_sub(1))
        } else {
            line(y / 2 + 1)
        };
        if self.up_x == 1 {
            for ((o, &a), &b) in out.iter_mut().zip(near).zip(far) {
                *o = ((3 * u32::from(a) + u32::from(b) + 2) >> 2) as u8;
            }
            return;
        }
        let column = |i: usize| 3 * u32::from(near[i]) + u32::from(far[i]);
        let width = self.width;
        if width == 1 {
            let v = ((column(0) + 2) >> 2) as u8;
            out[0] = v;
            out[1] = v;
            return;
        }
        let mut t1 = column(0);
        out[0] = ((t1 + 2) >> 2) as u8;
        for i in 1..width {
            let t0 = t1;
            t1 = column(i);
            out[2 * i - 1] = ((3 * t0 + t1 + 8) >> 4) as u8;
            out[2 * i] = ((3 * t1 + t0 + 8) >> 4) as u8;
        }
        out[2 * width - 1] = ((t1 + 2) >> 2) as u8;
    }
}

/// Horizontal triangle filter, 2×.
fn upsample_h2(input: &[u8], out: &mut [u8]) {
    let n = input.len();
    if n == 1 {
        out[0] = input[0];
        out[1] = input[0];
        return;
    }
    let at = |i: usize| u32::from(input[i]);
    out[0] = input[0];
    out[1] = ((3 * at(0) + at(1) + 2) >> 2) as u8;
    for i in 1..n - 1 {
        out[2 * i] = ((3 * at(i) + at(i - 1) + 2) >> 2) as u8;
        out[2 * i + 1] = ((3 * at(i) + at(i + 1) + 2) >> 2) as u8;
    }
    out[2 * (n - 1)] = ((3 * at(n - 1) + at(n - 2) + 2) >> 2) as u8;
    out[2 * n - 1] = input[n - 1];
}

/// JFIF YCbCr → RGB in fixed point.
fn ycbcr_to_rgb(y: &[u8], cb: &[u8], cr: &[u8], out: &mut [u8]) {
    let fixed = |x: f32| (x * (1 << COLOR_SHIFT) as f32 + 0.5) as i32;
    let (rv, gu, gv, bu) = (fixed(1.402), fixed(0.344_14), fixed(0.714_14), fixed(1.772));
    let half = 1 << (COLOR_SHIFT - 1);
    let clamp = |v: i32| (v >> COLOR_SHIFT).clamp(0, 255) as u8;
    for (((px, &y), &cb), &cr) in out.chunks_exact_mut(3).zip(y).zip(cb).zip(cr) {
        let y = (i32::from(y) << COLOR_SHIFT) + half;
        let (cb, cr) = (i32::from(cb) - 128, i32::from(cr) - 128);
        px[0] = clamp(y + rv * cr);
        px[1] = clamp(y - gu * cb - gv * cr);
        px[2] = clamp(y + bu * cb);
    }
}

/// The quantisation table in slot order, as floats.
fn dequantiser(zigzag: &[u16; 64], layout: &Layout) -> Vec<f32> {
    let mut q = vec![0f32; layout.slots];
    for (k, &value) in zigzag.iter().enumerate() {
        if let Some(slot) = layout.slot_of_zigzag(k) {
            q[slot] = f32::from(value);
        }
    }
    q
}

/// `basis[x * n + u]`: weight of frequency `u` at output sample `x` of an N-point IDCT
/// whose samples stand for 8/N pixels each, so that a block's DC gives its mean (see
/// [`basis_formula`]). Constants, not computed with `cos` at run time: thumbnails must be
/// byte-identical on every platform, and libm's `cos` may round differently on another.
/// Sizes 1 and 2 need no table (`idct_block` writes them out).
fn basis(n: usize) -> Vec<f32> {
    match n {
        4 => BASIS_4.to_vec(),
        8 => BASIS_8.to_vec(),
        _ => Vec::new(),
    }
}

/// `(u == 0 ? 1/√2 : 1) / 2 · cos((2x + 1)·u·π / 2n)` for n = 4, as f32.
#[rustfmt::skip]
const BASIS_4: [f32; 16] = [
    0.35355338, 0.46193975, 0.35355338, 0.19134171,
    0.35355338, 0.19134171, -0.35355338, -0.46193975,
    0.35355338, -0.19134171, -0.35355338, 0.46193975,
    0.35355338, -0.46193975, 0.35355338, -0.19134171,
];

/// The same for n = 8.
#[rustfmt::skip]
const BASIS_8: [f32; 64] = [
    0.35355338, 0.49039263, 0.46193975, 0.4157348, 0.35355338, 0.27778512, 0.19134171, 0.09754516,
    0.35355338, 0.4157348, 0.19134171, -0.09754516, -0.35355338, -0.49039263, -0.46193975, -0.27778512,
    0.35355338, 0.27778512, -0.19134171, -0.49039263, -0.35355338, 0.09754516, 0.46193975, 0.4157348,
    0.35355338, 0.09754516, -0.46193975, -0.27778512, 0.35355338, 0.4157348, -0.19134171, -0.49039263,
    0.35355338, -0.09754516, -0.46193975, 0.27778512, 0.35355338, -0.4157348, -0.19134171, 0.49039263,
    0.35355338, -0.27778512, -0.19134171, 0.49039263, -0.35355338, -0.09754516, 0.46193975, -0.4157348,
    0.35355338, -0.4157348, 0.19134171, 0.09754516, -0.35355338, 0.49039263, -0.46193975, 0.27778512,
    0.35355338, -0.49039263, 0.46193975, -0.4157348, 0.35355338, -0.27778512, 0.19134171, -0.09754516,
];

/// The formula the tables hold (tests check them against it).
#[cfg(test)]
fn basis_formula(n: usize) -> Vec<f32> {
    let mut b = vec![0f32; n * n];
    for x in 0..n {
        for u in 0..n {
            let scale = if u == 0 {
                std::f64::consts::FRAC_1_SQRT_2
            } else {
                1.0
            };
            let angle = (2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / (2 * n) as f64;
            b[x * n + u] = (scale / 2.0 * angle.cos()) as f32;
        }
    }
    b
}

/// Scaled IDCT of one block (`coef` and `quant` in slot order) into `out` rows of
/// `stride`, level-shifted and clamped.
fn idct_block(coef: &[i16], quant: &[f32], basis: &[f32], n: usize, out: &mut [u8], stride: usize) {
    match n {
        1 => out[0] = to_pixel(f32::from(coef[0]) * quant[0] / 8.0),
        2 => idct_2(coef, quant, out, stride),
        4 => idct_n::<4>(coef, quant, basis, out, stride),
        _ => idct_n::<8>(coef, quant, basis, out, stride),
    }
}

/// The 2×2 case written out: every weight is ±1/(2√2), so each pixel is a signed sum of
/// the four coefficients over 8.
fn idct_2(coef: &[i16], quant: &[f32], out: &mut [u8], stride: usize) {
    let f = |i: usize| f32::from(coef[i]) * quant[i] * 0.125;
    let (a, b, c, d) = (f(0), f(1), f(2), f(3));
    out[0] = to_pixel(a + b + c + d);
    out[1] = to_pixel(a - b + c - d);
    out[stride] = to_pixel(a + b - c - d);
    out[stride + 1] = to_pixel(a - b - c + d);
}

fn idct_n<const N: usize>(
    coef: &[i16],
    quant: &[f32],
    basis: &[f32],
    out: &mut [u8],
    stride: usize,
) {
    let mut f = [[0f32; N]; N];
    for v in 0..N {
        for u in 0..N {
            f[v][u] = f32::from(coef[v * N + u]) * quant[v * N + u];
        }
    }
    // Rows: tmp[v][x] = Σ_u f[v][u]·basis[x][u]; then columns.
    let mut tmp = [[0f32; N]; N];
    for v in 0..N {
        if f[v].iter().all(|&c| c == 0.0) {
            continue;
        }
        for x in 0..N {
            tmp[v][x] = (0..N).map(|u| f[v][u] * basis[x * N + u]).sum();
        }
    }
    for y in 0..N {
        let row = &mut out[y * stride..y * stride + N];
        for (x, px) in row.iter_mut().enumerate() {
            *px = to_pixel((0..N).map(|v| tmp[v][x] * basis[y * N + v]).sum());
        }
    }
}

#[inline]
fn to_pixel(v: f32) -> u8 {
    (v + 128.5).clamp(0.0, 255.0) as u8
}

#[cfg(test)]
mod basis_tests {
    #[test]
    fn the_constant_tables_are_the_formula() {
        for n in [4, 8] {
            assert_eq!(super::basis(n), super::basis_formula(n), "n = {n}");
        }
    }
}
