//! Turns the scan's entropy-coded bytes into plain bits: drops the 0x00 stuffed after
//! each 0xFF, removes restart markers (remembering where each one was) and stops at any
//! other marker (the scan's end). Done once, incrementally as bytes arrive, so the
//! Huffman decoder reads a plain byte array and every thread agrees on bit positions.

/// Restart markers RST0..RST7.
const RST: std::ops::RangeInclusive<u8> = 0xD0..=0xD7;

#[derive(Default)]
pub(super) struct Unstuffer {
    /// The entropy-coded bits, unstuffed.
    pub data: Vec<u8>,
    /// Offsets in `data` where a restart marker was: interval `i + 1` starts at
    /// `restarts[i]`.
    pub restarts: Vec<usize>,
    /// The last byte pushed was a 0xFF whose follower has not arrived.
    pending_ff: bool,
    /// A marker other than RSTn ended the scan.
    pub ended: bool,
}

impl Unstuffer {
    /// Appends the scan bytes in `raw` (the bytes following those of earlier calls).
    /// Returns how many bytes of `raw` belonged to the scan (all, unless it ended here).
    pub(super) fn push(&mut self, raw: &[u8]) -> usize {
        if self.ended {
            return 0;
        }
        let mut i = 0;
        if self.pending_ff && !raw.is_empty() {
            self.pending_ff = false;
            // The 0xFF itself came with the previous call.
            match self.after_ff(raw[0]) {
                Some(used) => i = used - 1,
                None => return 0,
            }
        }
        while i < raw.len() && !self.ended {
            let rest = &raw[i..];
            let Some(ff) = find_ff(rest) else {
                self.data.extend_from_slice(rest);
                return raw.len();
            };
            self.data.extend_from_slice(&rest[..ff]);
            i += ff;
            match raw.get(i + 1) {
                None => {
                    self.pending_ff = true;
                    return raw.len();
                }
                Some(&next) => match self.after_ff(next) {
                    Some(used) => i += used,
                    None => return i,
                },
            }
        }
        i
    }

    /// Handles 0xFF followed by `next`: bytes used, the 0xFF included (2 for 0xFF 0x00 and
    /// RSTn, 1 for a fill byte 0xFF), or `None` when a marker ends the scan.
    fn after_ff(&mut self, next: u8) -> Option<usize> {
        match next {
            0x00 => {
                self.data.push(0xFF);
                Some(2)
            }
            0xFF => Some(1), // Fill byte: the next 0xFF starts the marker.
            n if RST.contains(&n) => {
                self.restarts.push(self.data.len());
                Some(2)
            }
            _ => {
                self.ended = true;
                None
            }
        }
    }
}

/// Index of the first 0xFF, eight bytes at a time (0xFF is rare in entropy data).
fn find_ff(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut chunks = bytes.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        // A 0xFF byte is a zero byte of the complement.
        let inverted = !u64::from_ne_bytes(word);
        if inverted.wrapping_sub(ONES) & !inverted & HIGHS != 0 {
            return chunk.iter().position(|&b| b == 0xFF).map(|p| base + p);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == 0xFF)
        .map(|p| base + p)
}
