//! Huffman decoding of MCUs into coefficient blocks, from any [`Cursor`] (an MCU, a block
//! within it, a bit position and the DC predictors) to any later MCU. Only the top-left
//! N×N coefficients of each block are kept (N = the IDCT size), as quantised values, the
//! DC absolute. Restart intervals are handled here (jump to the next interval's start,
//! predictors reset). An [`Observer`] sees the state at every block start: how the
//! speculative thread records sync candidates and how the first thread finds one.

use super::bits::{BitPos, BitReader};
use super::header::{Header, MAX_BLOCKS_PER_MCU};
use super::huffman::{SkipKind, Table, FAST_BITS, NEEDS_EXTRA};
use crate::error::{Error, Result};

/// Most bytes one MCU can take: 10 blocks of 64 symbols of at most 31 bits, rounded up.
/// A decoder with this many bytes ahead of it cannot run out mid-MCU.
pub(super) const MAX_MCU_BYTES: usize = 4096;

/// Marks a zigzag position whose coefficient is not kept.
const SKIP: u8 = u8::MAX;

/// Natural (row-major) index of each zigzag position.
const ZIGZAG: [u8; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// The MCU geometry and coefficient layout of one decode.
pub(super) struct Layout {
    /// IDCT size: coefficients kept per block side (1, 2, 4 or 8).
    pub n: usize,
    /// Coefficients kept per block (n²).
    pub slots: usize,
    /// Blocks per MCU.
    pub bpm: usize,
    /// Component (frame index) of each block of an MCU, and its (column, row) in the MCU.
    pub block_comp: [usize; MAX_BLOCKS_PER_MCU],
    pub block_at: [(usize, usize); MAX_BLOCKS_PER_MCU],
    pub mcus_x: usize,
    pub mcus_y: usize,
    pub total_mcus: usize,
    /// MCUs per restart interval, 0 for none.
    pub restart_interval: usize,
    /// Slot (`row * n + column`) of each zigzag position, or [`SKIP`].
    zz_slot: [u8; 64],
    /// The last zigzag position kept: past it, coefficients are only skipped.
    last_kept: usize,
}

impl Layout {
    pub(super) fn new(header: &Header, n: usize) -> Layout {
        let single = header.components.len() == 1;
        let hmax = header.components.iter().map(|c| c.h).max().unwrap_or(1);
        let vmax = header.components.iter().map(|c| c.v).max().unwrap_or(1);
        let (w, h) = (header.width as usize, header.height as usize);
        let (mcus_x, mcus_y) = if single {
            (w.div_ceil(8), h.div_ceil(8))
        } else {
            (w.div_ceil(8 * hmax), h.div_ceil(8 * vmax))
        };
        let mut block_comp = [0; MAX_BLOCKS_PER_MCU];
        let mut block_at = [(0, 0); MAX_BLOCKS_PER_MCU];
        let mut bpm = 0;
        for &c in &header.scan_order {
            let comp = &header.components[c];
            for row in 0..comp.v {
                for col in 0..comp.h {
                    if bpm < MAX_BLOCKS_PER_MCU {
                        block_comp[bpm] = c;
                        block_at[bpm] = (col, row);
                        bpm += 1;
                    }
                }
            }
        }
        let mut zz_slot = [SKIP; 64];
        let mut last_kept = 0;
        for (k, &natural) in ZIGZAG.iter().enumerate() {
            let (row, col) = (usize::from(natural) / 8, usize::from(natural) % 8);
            if row < n && col < n {
                zz_slot[k] = (row * n + col) as u8;
                last_kept = k;
            }
        }
        Layout {
            n,
            slots: n * n,
            bpm,
            block_comp,
            block_at,
            mcus_x,
            mcus_y,
            total_mcus: mcus_x * mcus_y,
            restart_interval: header.restart_interval,
            zz_slot,
            last_kept,
        }
    }

    /// Length of the coefficient array for `mcus` MCUs.
    pub(super) fn coefficients(&self, mcus: usize) -> usize {
        mcus * self.bpm * self.slots
    }

    /// The zigzag position's slot in a kept block, if kept.
    pub(super) fn slot_of_zigzag(&self, k: usize) -> Option<usize> {
        self.zz_slot
            .get(k)
            .filter(|&&s| s != SKIP)
            .map(|&s| usize::from(s))
    }
}

/// The Huffman tables of each block of an MCU.
pub(super) struct Tables<'a> {
    dc: [&'a Table; MAX_BLOCKS_PER_MCU],
    ac: [&'a Table; MAX_BLOCKS_PER_MCU],
}

impl<'a> Tables<'a> {
    pub(super) fn new(header: &'a Header, layout: &Layout) -> Result<Tables<'a>> {
        let table = |slot: &'a Option<Table>| {
            slot.as_ref()
                .ok_or_else(|| Error::Undecodable("undefined Huffman table".into()))
        };
        let c0 = &header.components[layout.block_comp[0]];
        let (dc0, ac0) = (table(&header.dc[c0.dc])?, table(&header.ac[c0.ac])?);
        let mut tables = Tables {
            dc: [dc0; MAX_BLOCKS_PER_MCU],
            ac: [ac0; MAX_BLOCKS_PER_MCU],
        };
        for b in 0..layout.bpm {
            let c = &header.components[layout.block_comp[b]];
            tables.dc[b] = table(&header.dc[c.dc])?;
            tables.ac[b] = table(&header.ac[c.ac])?;
        }
        Ok(tables)
    }
}

/// Where a decoder is: before block `blk` of MCU `mcu`, at bit `bitpos`, with the DC
/// predictors of the components (frame order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Cursor {
    pub mcu: usize,
    pub blk: usize,
    pub bitpos: BitPos,
    pub preds: [i16; 3],
}

impl Cursor {
    pub(super) fn at(mcu: usize, bitpos: BitPos) -> Cursor {
        Cursor {
            mcu,
            blk: 0,
            bitpos,
            preds: [0; 3],
        }
    }
}

/// Why [`decode`] returned without error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Halt {
    /// Reached the end MCU.
    Finished,
    /// At an MCU start at or past the stop position, or before a restart marker not yet
    /// arrived: call again with more data.
    Paused,
    /// The observer asked to stop, before the cursor's block.
    Observed,
}

/// Sees the decoder's state before every block.
pub(super) trait Observer {
    /// False for observers that never look (the decode loop then skips the call).
    const ACTIVE: bool;
    /// True: stop before this block.
    fn block(&mut self, at: &Cursor) -> bool;
}

/// Looks at nothing: the plain decode.
pub(super) struct Unobserved;

impl Observer for Unobserved {
    const ACTIVE: bool = false;
    fn block(&mut self, _: &Cursor) -> bool {
        false
    }
}

/// What one [`decode`] call reads and writes.
pub(super) struct Target<'a, 'd> {
    pub layout: &'a Layout,
    pub tables: &'a Tables<'a>,
    /// Unstuffed entropy-coded data (possibly still growing) and restart marker offsets.
    pub data: &'d [u8],
    pub restarts: &'d [usize],
    /// The data is all there: a missing restart marker or running past the end is an
    /// error, not a reason to wait.
    pub complete: bool,
    /// Coefficients of the MCUs from `out_base` on.
    pub out: &'a mut [i16],
    pub out_base: usize,
}

/// Decodes from `cursor` up to (not including) MCU `end_mcu`, pausing at the first MCU
/// start at or after bit `stop_at`. On return `cursor` is where decoding stopped; after an
/// error, at the start of the MCU that failed (or where this call began, if later).
pub(super) fn decode<O: Observer>(
    t: &mut Target<'_, '_>,
    cursor: &mut Cursor,
    end_mcu: usize,
    stop_at: BitPos,
    observer: &mut O,
) -> Result<Halt> {
    let layout = t.layout;
    let data_bits = t.data.len() as u64 * 8;
    let mut reader = BitReader::at(t.data, cursor.bitpos);
    let mut at = *cursor;
    let mut safe = *cursor;
    let result = loop {
        if at.blk == 0 {
            at.bitpos = reader.bitpos();
            if at.mcu >= end_mcu {
                break Ok(Halt::Finished);
            }
            if layout.restart_interval > 0
                && at.mcu > 0
                && at.mcu.is_multiple_of(layout.restart_interval)
            {
                match t.restarts.get(at.mcu / layout.restart_interval - 1) {
                    Some(&start) => {
                        reader = BitReader::at(t.data, start as u64 * 8);
                        at.preds = [0; 3];
                    }
                    None if t.complete => break Err(corrupt("missing restart marker")),
                    None => break Ok(Halt::Paused),
                }
            }
            at.bitpos = reader.bitpos();
            if at.bitpos >= stop_at {
                break Ok(Halt::Paused);
            }
            safe = at;
        }
        if O::ACTIVE {
            at.bitpos = reader.bitpos();
            if observer.block(&at) {
                break Ok(Halt::Observed);
            }
        }
        let comp = layout.block_comp[at.blk];
        let start = at
            .mcu
            .checked_sub(t.out_base)
            .map(|m| (m * layout.bpm + at.blk) * layout.slots);
        let Some(out) = start.and_then(|start| t.out.get_mut(start..start + layout.slots)) else {
            break Err(Error::Undecodable(
                "JPEG coefficient index out of range".into(),
            ));
        };
        let pred = &mut at.preds[comp.min(2)];
        if let Err(e) = decode_block(&mut reader, t.tables, at.blk, layout, pred, out) {
            break Err(e);
        }
        at.blk += 1;
        if at.blk == layout.bpm {
            at.blk = 0;
            at.mcu += 1;
            if reader.bitpos() > data_bits {
                at = safe;
                break if t.complete {
                    Err(corrupt("truncated"))
                } else {
                    Ok(Halt::Paused)
                };
            }
        }
    };
    match result {
        Err(e) => {
            *cursor = safe;
            Err(e)
        }
        Ok(halt) => {
            *cursor = at;
            Ok(halt)
        }
    }
}

/// One block: the DC difference (added to `pred`) and the AC coefficients, keeping the
/// ones `layout` keeps. `out` holds zeros for the coefficients not coded.
#[inline(always)]
fn decode_block(
    reader: &mut BitReader<'_>,
    tables: &Tables<'_>,
    blk: usize,
    layout: &Layout,
    pred: &mut i16,
    out: &mut [i16],
) -> Result<()> {
    let (dc, ac) = (tables.dc[blk], tables.ac[blk]);
    // Refills are unconditional (branch-free): cheaper than a mispredicted test.
    reader.refill();
    let (_, diff) = symbol(reader, dc)?;
    *pred = pred.wrapping_add(diff as i16);
    if let Some(first) = out.first_mut() {
        *first = *pred;
    }
    // The coefficients kept, up to the last kept zigzag position.
    let mut k = 1;
    while k <= layout.last_kept {
        reader.refill();
        let (sym, value) = symbol(reader, ac)?;
        let (run, size) = (usize::from(sym >> 4), sym & 15);
        if size == 0 {
            if run == 15 {
                k += 16; // ZRL: sixteen zeros.
                continue;
            }
            return Ok(()); // EOB.
        }
        k += run;
        if k > 63 {
            return Err(corrupt("AC run past the end of a block"));
        }
        if let Some(slot) = layout.slot_of_zigzag(k) {
            if let Some(o) = out.get_mut(slot) {
                *o = value as i16;
            }
        }
        k += 1;
    }
    // The rest only has to be read past: one lookup per symbol, no values, and two
    // symbols per refill when the first came from the table (at most 25 bits, leaving 31
    // of the 56 for any second symbol).
    while k < 64 {
        reader.refill();
        let (step, kind, fast) = skip_symbol(reader, ac)?;
        if advance(&mut k, step, kind)? || k >= 64 {
            break;
        }
        if !fast {
            continue;
        }
        let (step, kind, _) = skip_symbol(reader, ac)?;
        if advance(&mut k, step, kind)? {
            break;
        }
    }
    Ok(())
}

/// The next AC symbol, read past: (zigzag step, kind, came from the lookahead table).
#[inline(always)]
fn skip_symbol(reader: &mut BitReader<'_>, ac: &Table) -> Result<(usize, SkipKind, bool)> {
    let skip = ac.skip[reader.peek(FAST_BITS)];
    if skip.len != 0 {
        reader.consume(u32::from(skip.len));
        return Ok((usize::from(skip.step), skip.kind, true));
    }
    let (sym, _) = symbol(reader, ac)?;
    Ok(match (sym >> 4, sym & 15) {
        (15, 0) => (16, SkipKind::ZeroRun, false),
        (_, 0) => (0, SkipKind::EndOfBlock, false),
        (run, _) => (usize::from(run) + 1, SkipKind::Coefficient, false),
    })
}

/// Moves `k` past a skipped symbol; true at the end of the block.
#[inline(always)]
fn advance(k: &mut usize, step: usize, kind: SkipKind) -> Result<bool> {
    match kind {
        SkipKind::EndOfBlock => Ok(true),
        SkipKind::ZeroRun => {
            *k += 16;
            Ok(false)
        }
        SkipKind::Coefficient => {
            *k += step;
            if *k > 64 {
                return Err(corrupt("AC run past the end of a block"));
            }
            Ok(false)
        }
    }
}

/// The next symbol of `table` and its extended value (one symbol is buffered).
#[inline(always)]
fn symbol(reader: &mut BitReader<'_>, table: &Table) -> Result<(u8, i32)> {
    let entry = table.fast[reader.peek(FAST_BITS)];
    if entry.len != 0 && entry.len & NEEDS_EXTRA == 0 {
        reader.consume(u32::from(entry.len));
        return Ok((entry.symbol, i32::from(entry.value)));
    }
    let (len, sym) = if entry.len != 0 {
        (u32::from(entry.len & !NEEDS_EXTRA), entry.symbol)
    } else {
        table.slow(reader.peek(16))?
    };
    reader.consume(len);
    Ok((sym, reader.receive_extend(table.size_of(sym))))
}

fn corrupt(what: &str) -> Error {
    Error::Undecodable(format!("corrupt JPEG data: {what}"))
}
