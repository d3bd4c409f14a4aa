//! Reads the entropy-coded data bit by bit, MSB first, from bytes that are already
//! unstuffed (see [`super::unstuff`]): a 64-bit buffer refilled up to 7 bytes at a time by
//! one big-endian load, so the hot path has no per-byte or per-bit loop. Past the end of
//! the data it reads zero bits; the caller notices by [`BitReader::bitpos`].

/// A position in the data, in bits from its first byte: the one coordinate every decoder
/// of the same data agrees on, whatever its refill history (how sync points are matched).
pub(super) type BitPos = u64;

pub(super) struct BitReader<'a> {
    data: &'a [u8],
    /// Next byte to load into `buf`.
    pos: usize,
    /// The next bits, MSB first; bits below `nbits` are either zero or the right next bits.
    buf: u64,
    /// Valid bits in `buf` (at most 63).
    nbits: u32,
}

impl<'a> BitReader<'a> {
    /// A reader whose next bit is bit `bitpos` of `data`.
    pub(super) fn at(data: &'a [u8], bitpos: BitPos) -> Self {
        let pos = usize::try_from(bitpos / 8)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let mut reader = BitReader {
            data,
            pos,
            buf: 0,
            nbits: 0,
        };
        reader.refill();
        // A `bitpos` past the end reads as zeros: skipping its sub-byte part is enough.
        if pos < data.len() || bitpos / 8 == data.len() as u64 {
            reader.consume((bitpos % 8) as u32);
        }
        reader
    }

    /// Bits consumed so far, from the start of the data.
    #[inline(always)]
    pub(super) fn bitpos(&self) -> BitPos {
        self.pos as u64 * 8 - u64::from(self.nbits)
    }

    /// Tops the buffer up to at least 56 bits: enough for one whole symbol (a 16-bit
    /// code and 15 extra bits). Branch-free, so callers refill before every symbol
    /// instead of testing (a mispredicted test costs more).
    #[inline(always)]
    pub(super) fn refill(&mut self) {
        let word = match self
            .data
            .get(self.pos..)
            .and_then(|rest| rest.first_chunk::<8>())
        {
            Some(bytes) => u64::from_be_bytes(*bytes),
            None => self.tail_word(),
        };
        // Bits already in the buffer below `nbits` are the same bits as in `word`, so
        // OR-ing them in again is harmless (the branch-free refill).
        self.buf |= word >> self.nbits;
        let bytes = (63 - self.nbits) >> 3;
        self.pos += bytes as usize;
        self.nbits += bytes * 8;
    }

    /// The next 8 bytes near the end of the data, zeros past it.
    #[cold]
    fn tail_word(&self) -> u64 {
        let mut bytes = [0u8; 8];
        if let Some(rest) = self.data.get(self.pos..) {
            let n = rest.len().min(8);
            bytes[..n].copy_from_slice(&rest[..n]);
        }
        u64::from_be_bytes(bytes)
    }

    /// The next `n` bits (1..=16) without consuming them.
    #[inline(always)]
    pub(super) fn peek(&self, n: u32) -> usize {
        (self.buf >> (64 - n)) as usize
    }

    /// Drops `n` bits (at most the buffered ones).
    #[inline(always)]
    pub(super) fn consume(&mut self, n: u32) {
        // Callers consume at most one symbol per refill (n ≤ 31 ≤ 56 ≤ nbits).
        debug_assert!(n <= self.nbits && n < 64);
        self.buf <<= n;
        self.nbits -= n;
    }

    /// Reads `size` (1..=15) bits as a JPEG "extended" signed value.
    #[inline(always)]
    pub(super) fn receive_extend(&mut self, size: u32) -> i32 {
        if size == 0 {
            return 0;
        }
        let bits = self.peek(size) as i32;
        self.consume(size);
        extend(bits, size)
    }
}

/// The signed value of `size` magnitude bits: values below half the range are negative.
#[inline(always)]
pub(super) fn extend(bits: i32, size: u32) -> i32 {
    if size == 0 {
        0
    } else if bits < 1 << (size - 1) {
        bits - (1 << size) + 1
    } else {
        bits
    }
}
