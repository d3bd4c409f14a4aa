//! Huffman tables of a JPEG (DHT) turned into decoding tables: a lookahead of
//! [`FAST_BITS`] bits gives the code length and the symbol and, when it fits too, the
//! extended value of the coefficient, so most symbols cost one table load. A second
//! lookahead table ([`Table::skip`]) serves AC coefficients the IDCT scale drops: code and
//! extra bits skipped in one step, no value computed. Longer codes take the
//! canonical-code path ([`Table::slow`]).

use crate::error::{Error, Result};

/// Lookahead bits of the fast table (1024 entries of 4 bytes: two AC and two DC tables
/// stay in L1).
pub(super) const FAST_BITS: u32 = 10;

/// Longest Huffman code in JPEG.
const MAX_CODE_BITS: usize = 16;

/// `Entry::len` flag: only the code is in the entry; its extra bits still follow.
pub(super) const NEEDS_EXTRA: u8 = 0x80;

/// One lookahead entry.
#[derive(Clone, Copy, Default)]
pub(super) struct Entry {
    /// The extended value, when the extra bits fit in the lookahead.
    pub value: i16,
    /// Bits to consume (code + extra, or code alone with [`NEEDS_EXTRA`]); 0: not a code
    /// of at most [`FAST_BITS`] bits.
    pub len: u8,
    /// The decoded symbol (DC: size; AC: run << 4 | size).
    pub symbol: u8,
}

/// One lookahead entry for AC coefficients that are not kept: how far to skip.
#[derive(Clone, Copy, Default)]
pub(super) struct Skip {
    /// Bits of code and extra bits together; 0: not a code of at most [`FAST_BITS`] bits.
    pub len: u8,
    /// Zigzag positions to advance (run + 1, or 16 for ZRL).
    pub step: u8,
    pub kind: SkipKind,
}

/// What a [`Skip`] entry's symbol is.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum SkipKind {
    /// End of block (and any other zero-size symbol but ZRL, as the decode loop treats them).
    #[default]
    EndOfBlock,
    Coefficient,
    /// Sixteen zeros.
    ZeroRun,
}

/// Which coefficient a table codes, which decides what "size" means in its symbols.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Class {
    Dc,
    Ac,
}

pub(super) struct Table {
    class: Class,
    pub fast: Box<[Entry; 1 << FAST_BITS]>,
    /// For AC coefficients past the kept ones: value not needed, so every code of at
    /// most [`FAST_BITS`] bits skips in one step, however many extra bits follow.
    pub skip: Box<[Skip; 1 << FAST_BITS]>,
    /// Largest code of each length (`-1`: none), for codes longer than the lookahead.
    max_code: [i32; MAX_CODE_BITS + 1],
    /// Index into `symbols` of the first code of each length, minus that code.
    offset: [i32; MAX_CODE_BITS + 1],
    symbols: Vec<u8>,
}

impl Table {
    /// Builds a table from a DHT's 16 counts and its symbols, refusing tables whose codes
    /// do not fit their lengths or whose symbols make no sense for `class`.
    pub(super) fn new(class: Class, counts: &[u8; MAX_CODE_BITS], symbols: &[u8]) -> Result<Table> {
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if total == 0 || total > 256 || total != symbols.len() {
            return Err(bogus("symbol count"));
        }
        if class == Class::Dc && symbols.iter().any(|&s| s > 15) {
            return Err(bogus("DC symbol above 15"));
        }
        let mut table = Table {
            class,
            fast: Box::new([Entry::default(); 1 << FAST_BITS]),
            skip: Box::new([Skip::default(); 1 << FAST_BITS]),
            max_code: [-1; MAX_CODE_BITS + 1],
            offset: [0; MAX_CODE_BITS + 1],
            symbols: symbols.to_vec(),
        };
        let mut code: u32 = 0;
        let mut index = 0usize;
        for len in 1..=MAX_CODE_BITS {
            let count = usize::from(counts[len - 1]);
            if count > 0 {
                table.offset[len] = index as i32 - code as i32;
                for &symbol in &symbols[index..index + count] {
                    if code >= 1 << len {
                        return Err(bogus("more codes than their length allows"));
                    }
                    if len as u32 <= FAST_BITS {
                        table.fill_fast(code, len as u32, symbol);
                    }
                    code += 1;
                }
                table.max_code[len] = code as i32 - 1;
                index += count;
            }
            code <<= 1;
        }
        Ok(table)
    }

    /// Fills every lookahead entry that starts with `code` (of `len` bits).
    fn fill_fast(&mut self, code: u32, len: u32, symbol: u8) {
        let size = self.size_of(symbol);
        let spare = FAST_BITS - len;
        let first = (code << spare) as usize;
        let (run, kind) = match (symbol >> 4, size) {
            (15, 0) => (15, SkipKind::ZeroRun),
            (_, 0) => (0, SkipKind::EndOfBlock),
            (run, _) => (run, SkipKind::Coefficient),
        };
        let skip = Skip {
            len: (len + size) as u8,
            step: run + 1,
            kind,
        };
        self.skip[first..first + (1 << spare)].fill(skip);
        for index in first..first + (1 << spare) {
            self.fast[index] = if len + size <= FAST_BITS {
                let extra = (index >> (spare - size)) as i32 & ((1 << size) - 1);
                Entry {
                    value: super::bits::extend(extra, size) as i16,
                    len: (len + size) as u8,
                    symbol,
                }
            } else {
                Entry {
                    value: 0,
                    len: len as u8 | NEEDS_EXTRA,
                    symbol,
                }
            };
        }
    }

    /// Magnitude bits that follow a symbol.
    #[inline(always)]
    pub(super) fn size_of(&self, symbol: u8) -> u32 {
        match self.class {
            Class::Dc => u32::from(symbol),
            Class::Ac => u32::from(symbol & 15),
        }
    }

    /// A code longer than the lookahead, from the next 16 bits: (length, symbol).
    #[cold]
    pub(super) fn slow(&self, next16: usize) -> Result<(u32, u8)> {
        for len in 1..=MAX_CODE_BITS {
            let code = (next16 >> (MAX_CODE_BITS - len)) as i32;
            if code <= self.max_code[len] {
                let index = usize::try_from(self.offset[len] + code).map_err(|_| bogus("code"))?;
                let symbol = *self.symbols.get(index).ok_or_else(|| bogus("code"))?;
                return Ok((len as u32, symbol));
            }
        }
        Err(Error::Undecodable(
            "invalid Huffman code in JPEG data".into(),
        ))
    }
}

fn bogus(what: &str) -> Error {
    Error::Undecodable(format!("bogus JPEG Huffman table: {what}"))
}
