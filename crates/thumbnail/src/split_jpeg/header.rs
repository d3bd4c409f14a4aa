//! Parses a JPEG's markers up to its first scan: frame (SOF0/SOF1), quantisation and
//! Huffman tables, restart interval, Adobe colour transform. Decides whether the file is
//! one this decoder handles (baseline Huffman, 8-bit, 1 or 3 components, sampling 1 or 2,
//! one interleaved scan) and checks the pixel limit before anything is allocated.
//! Incremental: [`HeaderParser::feed`] can be called again as more bytes arrive, and only
//! looks at segments it has not parsed yet.

use super::huffman::{Class, Table};
use crate::error::{Error, Result};
use crate::probe::Limits;

/// Components handled: grayscale or YCbCr.
const MAX_COMPONENTS: usize = 3;

/// Table slots (quantisation, DC and AC Huffman) a JPEG may define.
const TABLE_SLOTS: usize = 4;

/// Adobe APP14 segments start with this.
const ADOBE: &[u8] = b"Adobe";

/// Blocks in one MCU at most (the JPEG standard's limit for interleaved scans).
pub(super) const MAX_BLOCKS_PER_MCU: usize = 10;

/// One component of the frame, with the tables the scan gives it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Component {
    pub id: u8,
    /// Horizontal and vertical sampling factors, 1 or 2.
    pub h: usize,
    pub v: usize,
    pub quant: usize,
    pub dc: usize,
    pub ac: usize,
}

/// Everything the entropy decoder and the IDCT need.
pub(super) struct Header {
    pub width: u32,
    pub height: u32,
    /// In frame order (Y, Cb, Cr).
    pub components: Vec<Component>,
    /// Indices into `components` in the scan's order: the order of blocks in an MCU.
    pub scan_order: Vec<usize>,
    /// Quantisation tables, in zigzag order as stored.
    pub quant: [[u16; 64]; TABLE_SLOTS],
    pub dc: [Option<Table>; TABLE_SLOTS],
    pub ac: [Option<Table>; TABLE_SLOTS],
    /// MCUs per restart interval; 0: no restart markers.
    pub restart_interval: usize,
}

/// What [`HeaderParser::feed`] found.
pub(super) enum Step {
    /// The header goes on past the bytes given.
    NeedMore,
    /// A JPEG this decoder does not handle; the caller falls back to another decoder.
    Unsupported(&'static str),
    /// The scan starts at byte `entropy_start`.
    Scan {
        header: Box<Header>,
        entropy_start: usize,
    },
}

pub(super) struct HeaderParser {
    /// Start of the next unparsed marker.
    offset: usize,
    frame: Option<(u32, u32, Vec<Component>)>,
    quant: [[u16; 64]; TABLE_SLOTS],
    quant_defined: [bool; TABLE_SLOTS],
    dc: [Option<Table>; TABLE_SLOTS],
    ac: [Option<Table>; TABLE_SLOTS],
    restart_interval: usize,
    adobe_transform: Option<u8>,
}

impl Default for HeaderParser {
    fn default() -> Self {
        HeaderParser {
            offset: 0,
            frame: None,
            quant: [[0; 64]; TABLE_SLOTS],
            quant_defined: [false; TABLE_SLOTS],
            dc: Default::default(),
            ac: Default::default(),
            restart_interval: 0,
            adobe_transform: None,
        }
    }
}

impl HeaderParser {
    /// Parses the complete segments of `bytes` (the file from its first byte, possibly cut
    /// short) not parsed by an earlier call.
    pub(super) fn feed(&mut self, bytes: &[u8], limits: &Limits) -> Result<Step> {
        if self.offset == 0 {
            if bytes.len() < 2 {
                return Ok(Step::NeedMore);
            }
            if bytes[..2] != [0xFF, 0xD8] {
                return Err(Error::NotAnImage);
            }
            self.offset = 2;
        }
        loop {
            let rest = &bytes[self.offset..];
            // Fill bytes (0xFF) may precede a marker.
            let Some(marker_at) = rest.iter().position(|&b| b != 0xFF) else {
                return Ok(Step::NeedMore);
            };
            if marker_at == 0 {
                return Err(undecodable("expected a marker"));
            }
            let marker = rest[marker_at];
            let after = self.offset + marker_at + 1;
            // Markers without a length: RSTn, TEM.
            if (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
                self.offset = after;
                continue;
            }
            if marker == 0xD9 {
                return Err(undecodable("no scan before EOI"));
            }
            let Some(len_bytes) = bytes.get(after..after + 2) else {
                return Ok(Step::NeedMore);
            };
            let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
            if len < 2 {
                return Err(undecodable("segment length below 2"));
            }
            let Some(payload) = bytes.get(after + 2..after + len) else {
                return Ok(Step::NeedMore);
            };
            let end = after + len;
            match marker {
                0xC0 | 0xC1 => {
                    if let Some(reason) = self.frame(payload, limits)? {
                        return Ok(Step::Unsupported(reason));
                    }
                }
                0xC2 | 0xC6 | 0xCA | 0xCE => return Ok(Step::Unsupported("progressive JPEG")),
                0xC3 | 0xC7 | 0xCB | 0xCF => return Ok(Step::Unsupported("lossless JPEG")),
                0xC5 => return Ok(Step::Unsupported("hierarchical JPEG")),
                0xC9 | 0xCC | 0xCD => return Ok(Step::Unsupported("arithmetic-coded JPEG")),
                0xC4 => self.huffman(payload)?,
                0xDB => self.quantisation(payload)?,
                0xDD => {
                    let ri = payload.get(..2).ok_or_else(|| undecodable("short DRI"))?;
                    self.restart_interval = usize::from(u16::from_be_bytes([ri[0], ri[1]]));
                }
                0xEE if payload.starts_with(ADOBE) => {
                    self.adobe_transform = payload.get(11).copied();
                }
                0xDA => {
                    self.offset = end;
                    return self.scan(payload, end);
                }
                _ => {} // APPn, COM and the like.
            }
            self.offset = end;
        }
    }

    /// SOF0/SOF1. `Some(reason)`: a frame this decoder does not handle.
    fn frame(&mut self, p: &[u8], limits: &Limits) -> Result<Option<&'static str>> {
        if self.frame.is_some() {
            return Err(undecodable("two frames"));
        }
        let head = p.get(..6).ok_or_else(|| undecodable("short SOF"))?;
        if head[0] != 8 {
            return Ok(Some("JPEG precision other than 8 bits"));
        }
        let height = u32::from(u16::from_be_bytes([head[1], head[2]]));
        let width = u32::from(u16::from_be_bytes([head[3], head[4]]));
        let count = usize::from(head[5]);
        if height == 0 {
            return Ok(Some("JPEG height given by DNL"));
        }
        if width == 0 {
            return Err(undecodable("zero width"));
        }
        if u64::from(width) * u64::from(height) > limits.max_pixels {
            return Err(Error::TooLarge(format!(
                "{width}×{height} pixels, limit {}",
                limits.max_pixels
            )));
        }
        if count != 1 && count != MAX_COMPONENTS {
            return Ok(Some("JPEG component count other than 1 or 3"));
        }
        let specs = p
            .get(6..6 + 3 * count)
            .ok_or_else(|| undecodable("short SOF"))?;
        let mut components = Vec::with_capacity(count);
        for spec in specs.chunks_exact(3) {
            let (h, v) = (usize::from(spec[1] >> 4), usize::from(spec[1] & 15));
            if !(1..=2).contains(&h) || !(1..=2).contains(&v) {
                return Ok(Some("JPEG sampling factor other than 1 or 2"));
            }
            let quant = usize::from(spec[2]);
            if quant >= TABLE_SLOTS {
                return Err(undecodable("quantisation table index"));
            }
            if components.iter().any(|c: &Component| c.id == spec[0]) {
                return Err(undecodable("duplicate component id"));
            }
            components.push(Component {
                id: spec[0],
                h,
                v,
                quant,
                dc: 0,
                ac: 0,
            });
        }
        if count == 1 {
            // A lone component is never subsampled: its scan has one block per MCU.
            components[0].h = 1;
            components[0].v = 1;
        }
        if components.iter().map(|c| c.h * c.v).sum::<usize>() > MAX_BLOCKS_PER_MCU {
            return Err(undecodable("more than 10 blocks per MCU"));
        }
        self.frame = Some((width, height, components));
        Ok(None)
    }

    /// DHT: one or more tables.
    fn huffman(&mut self, mut p: &[u8]) -> Result<()> {
        while !p.is_empty() {
            let head = p.get(..17).ok_or_else(|| undecodable("short DHT"))?;
            let (class, slot) = (head[0] >> 4, usize::from(head[0] & 15));
            if slot >= TABLE_SLOTS || class > 1 {
                return Err(undecodable("Huffman table class or index"));
            }
            let mut counts = [0u8; 16];
            counts.copy_from_slice(&head[1..17]);
            let n: usize = counts.iter().map(|&c| usize::from(c)).sum();
            let symbols = p.get(17..17 + n).ok_or_else(|| undecodable("short DHT"))?;
            if class == 0 {
                self.dc[slot] = Some(Table::new(Class::Dc, &counts, symbols)?);
            } else {
                self.ac[slot] = Some(Table::new(Class::Ac, &counts, symbols)?);
            }
            p = &p[17 + n..];
        }
        Ok(())
    }

    /// DQT: one or more tables, 8- or 16-bit values.
    fn quantisation(&mut self, mut p: &[u8]) -> Result<()> {
        while let Some(&head) = p.first() {
            let (wide, slot) = (head >> 4, usize::from(head & 15));
            if slot >= TABLE_SLOTS || wide > 1 {
                return Err(undecodable("quantisation table precision or index"));
            }
            let bytes = if wide == 1 { 128 } else { 64 };
            let values = p
                .get(1..1 + bytes)
                .ok_or_else(|| undecodable("short DQT"))?;
            for (i, q) in self.quant[slot].iter_mut().enumerate() {
                *q = if wide == 1 {
                    u16::from_be_bytes([values[2 * i], values[2 * i + 1]])
                } else {
                    u16::from(values[i])
                };
            }
            self.quant_defined[slot] = true;
            p = &p[1 + bytes..];
        }
        Ok(())
    }

    /// SOS: the scan must hold every component (one interleaved scan, or the one
    /// component of a grayscale image) with defined tables.
    fn scan(&mut self, p: &[u8], entropy_start: usize) -> Result<Step> {
        let Some((width, height, mut components)) = self.frame.take() else {
            return Err(undecodable("scan before frame"));
        };
        let count = usize::from(*p.first().ok_or_else(|| undecodable("short SOS"))?);
        if count != components.len() {
            return Ok(Step::Unsupported("JPEG with more than one scan"));
        }
        if self.adobe_transform == Some(0) && components.len() == MAX_COMPONENTS {
            return Ok(Step::Unsupported("RGB JPEG (Adobe transform 0)"));
        }
        if components.iter().map(|c| c.id).eq(*b"RGB") {
            return Ok(Step::Unsupported("RGB JPEG (components R, G, B)"));
        }
        let specs = p
            .get(1..1 + 2 * count)
            .ok_or_else(|| undecodable("short SOS"))?;
        let mut scan_order = Vec::with_capacity(count);
        for spec in specs.chunks_exact(2) {
            let index = components
                .iter()
                .position(|c| c.id == spec[0])
                .ok_or_else(|| undecodable("scan names an unknown component"))?;
            if scan_order.contains(&index) {
                return Err(undecodable("component twice in a scan"));
            }
            let (dc, ac) = (usize::from(spec[1] >> 4), usize::from(spec[1] & 15));
            if dc >= TABLE_SLOTS || ac >= TABLE_SLOTS {
                return Err(undecodable("Huffman table index"));
            }
            if self.dc[dc].is_none() || self.ac[ac].is_none() {
                return Err(undecodable("scan uses an undefined Huffman table"));
            }
            if !self.quant_defined[components[index].quant] {
                return Err(undecodable("undefined quantisation table"));
            }
            components[index].dc = dc;
            components[index].ac = ac;
            scan_order.push(index);
        }
        Ok(Step::Scan {
            header: Box::new(Header {
                width,
                height,
                components,
                scan_order,
                quant: self.quant,
                dc: std::mem::take(&mut self.dc),
                ac: std::mem::take(&mut self.ac),
                restart_interval: self.restart_interval,
            }),
            entropy_start,
        })
    }
}

fn undecodable(what: &str) -> Error {
    Error::Undecodable(format!("JPEG header: {what}"))
}
