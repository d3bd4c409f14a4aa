//! Finishes the entropy decoding of a complete scan from a [`Cursor`], on the calling
//! thread alone or with a second (scoped) thread taking the second half of the data.
//!
//! * With restart markers the second thread starts at the first marker at or after the
//!   middle: a known MCU, byte-aligned, predictors zero. It writes straight into its half.
//! * Without, it starts at a byte near the middle, guessing MCU 0, block 0, predictors
//!   zero. Huffman codes resynchronise after a few symbols, so from some block on it
//!   decodes exactly what the first thread would, MCU index shifted and each DC off by a
//!   constant. It records its state at its first block starts ([`RECORDS`]) and publishes
//!   them; the first thread, once past the split byte, compares its own state at each
//!   block start with them. At the first equal (bit position, block of the MCU) pair the
//!   rest is the second thread's, copied over with the MCU shift and the DC offsets (the
//!   first thread knows the true predictors there). Garbage before sync often hits an
//!   invalid code: the second thread then starts again a byte further on. No match, or
//!   the second thread failed: the first thread stops it and decodes on to the end alone;
//!   if it stopped early after sync (corrupt or truncated data), the first thread goes on
//!   from where it stopped and meets the same error.
//!
//! Either way the coefficients are exactly those of a one-thread decode: the state at a
//! block start (bit position, block index, predictors up to the known offset) decides all
//! that follows. Speculation only changes how fast.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::bits::BitPos;
use super::entropy::{
    decode, Cursor, Halt, Layout, Observer, Tables, Target, Unobserved, MAX_MCU_BYTES,
};
use super::threads;
use crate::error::{Error, Result};

/// Data left below which a second thread is not worth its start-up.
pub(super) const MIN_SPLIT_BYTES: usize = 64 * 1024;

/// Block starts the speculative thread records as sync candidates. The first few dozen
/// blocks are usually enough; more only costs a little memory.
const RECORDS: usize = 8192;

/// Times the speculative thread starts again one byte further after a decoding error
/// before it has recorded its candidates (garbage before sync often hits invalid codes).
const MAX_SPECULATIVE_RESTARTS: usize = 64;

/// MCUs the speculative thread decodes between looks at the cancel flag.
const CHUNK_MCUS: usize = 1024;

/// Where the second thread starts (the pipeline always splits in the middle; tests and
/// the bench pick a byte).
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum SplitAt {
    /// The middle of what is left.
    Middle,
    /// This byte of the unstuffed entropy data (tests: determinism at any split).
    Byte(usize),
    /// This byte, and the second thread offers no sync candidates, so speculation fails
    /// (tests: the fallback path).
    ByteWithoutSync(usize),
}

/// How the entropy decoding went (for benchmarks and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Trace {
    /// Byte of the unstuffed data where the second thread started, if one ran.
    pub split_byte: Option<usize>,
    /// The split was at a restart marker.
    pub at_restart: bool,
    /// Speculation synced, this many bytes after the split byte.
    pub synced_after: Option<usize>,
    /// Fresh starts of the speculative thread after errors.
    pub speculative_restarts: usize,
    /// MCUs whose coefficients the second thread provided.
    pub second_thread_mcus: usize,
    /// MCUs the calling thread had decoded when the data was complete (a reader's).
    pub mcus_while_arriving: usize,
    /// Time the first thread waited for the second (its candidates, then its end): how
    /// unevenly the work was split.
    pub waited_for_second: Duration,
    /// Time in the serial part before the split (unstuffing, for a slice), in the split
    /// entropy decoding, and in the IDCT and colour conversion.
    pub before_split: Duration,
    pub entropy: Duration,
    pub pixels: Duration,
}

/// A complete scan to decode.
pub(super) struct Scan<'a> {
    pub layout: &'a Layout,
    pub tables: &'a Tables<'a>,
    pub data: &'a [u8],
    pub restarts: &'a [usize],
}

impl<'a> Scan<'a> {
    fn target<'o>(&'o self, out: &'o mut [i16], out_base: usize) -> Target<'o, 'a> {
        Target {
            layout: self.layout,
            tables: self.tables,
            data: self.data,
            restarts: self.restarts,
            complete: true,
            out,
            out_base,
        }
    }

    /// Decodes from `cursor` to the end on this thread.
    fn to_end(&self, coefs: &mut [i16], mut cursor: Cursor) -> Result<()> {
        let total = self.layout.total_mcus;
        decode(
            &mut self.target(coefs, 0),
            &mut cursor,
            total,
            BitPos::MAX,
            &mut Unobserved,
        )?;
        Ok(())
    }
}

/// Decodes `scan` from `cursor` to its last MCU into `coefs` (all MCUs), with up to
/// `threads` threads (at most 2 are used).
pub(super) fn finish(
    scan: &Scan<'_>,
    coefs: &mut [i16],
    cursor: Cursor,
    threads: usize,
    split: SplitAt,
    trace: &mut Trace,
) -> Result<()> {
    let first = usize::try_from(cursor.bitpos / 8).unwrap_or(usize::MAX);
    let len = scan.data.len();
    if threads < 2 || len.saturating_sub(first) < MIN_SPLIT_BYTES {
        return scan.to_end(coefs, cursor);
    }
    let (target, candidates) = match split {
        SplitAt::Middle => (first + (len - first) / 2, RECORDS),
        SplitAt::Byte(b) => (b, RECORDS),
        SplitAt::ByteWithoutSync(b) => (b, 0),
    };
    if scan.layout.restart_interval > 0 {
        at_restart(scan, coefs, cursor, target, trace)
    } else if target > first && target < len {
        speculative(scan, coefs, cursor, (target, candidates), trace)
    } else {
        scan.to_end(coefs, cursor)
    }
}

/// Two threads split at the first restart marker at or after byte `target`.
fn at_restart(
    scan: &Scan<'_>,
    coefs: &mut [i16],
    cursor: Cursor,
    target: usize,
    trace: &mut Trace,
) -> Result<()> {
    let (ri, total) = (scan.layout.restart_interval, scan.layout.total_mcus);
    let split = scan.restarts.iter().enumerate().find_map(|(i, &offset)| {
        let mcu = (i + 1).checked_mul(ri)?;
        (offset >= target && mcu > cursor.mcu && mcu < total).then_some((mcu, offset))
    });
    let Some((mid, offset)) = split else {
        return scan.to_end(coefs, cursor);
    };
    let (low, high) = coefs.split_at_mut(scan.layout.coefficients(mid).min(coefs.len()));
    let second_half = |high: &mut [i16]| {
        let mut at = Cursor::at(mid, offset as u64 * 8);
        decode(
            &mut scan.target(high, mid),
            &mut at,
            total,
            BitPos::MAX,
            &mut Unobserved,
        )
    };
    let (first, second) = std::thread::scope(|s| {
        let second = threads::spawn_or_none(s, || second_half(&mut *high));
        let mut at = cursor;
        let first = decode(
            &mut scan.target(low, 0),
            &mut at,
            mid,
            BitPos::MAX,
            &mut Unobserved,
        );
        (first, second.map(|handle| handle.join()))
    });
    // The first error in stream order, as one thread would have met it.
    first?;
    match second {
        Some(joined) => {
            joined.map_err(|_| Error::Undecodable("JPEG decoding thread panicked".into()))??;
            trace.split_byte = Some(offset);
            trace.at_restart = true;
            trace.second_thread_mcus = total - mid;
        }
        // No second thread to be had: the rest on this one.
        None => {
            second_half(high)?;
        }
    }
    Ok(())
}

/// What the speculative thread hands back.
struct Speculation {
    /// Coefficients of its MCUs, numbered from its own MCU 0.
    coefs: Vec<i16>,
    /// Where it stopped (its numbering): the end of its valid data.
    end: Cursor,
    restarts: usize,
}

/// Two threads, the second starting at byte `target` without knowing where it is and
/// offering at most `offered` sync points.
fn speculative(
    scan: &Scan<'_>,
    coefs: &mut [i16],
    cursor: Cursor,
    (target, offered): (usize, usize),
    trace: &mut Trace,
) -> Result<()> {
    let cancel = AtomicBool::new(false);
    let (publish, candidates) = mpsc::sync_channel::<Vec<Cursor>>(1);
    trace.split_byte = Some(target);
    std::thread::scope(|s| {
        let Some(second) =
            threads::spawn_or_none(s, || speculate(scan, target, offered, &cancel, publish))
        else {
            // No second thread to be had: decode on alone.
            trace.split_byte = None;
            return scan.to_end(coefs, cursor);
        };
        let second = Second {
            handle: second,
            candidates: &candidates,
            cancel: &cancel,
        };
        let result = first_thread(scan, coefs, cursor, target, trace, second);
        // Whatever happened, the second thread has nothing more to do.
        cancel.store(true, Ordering::Relaxed);
        result
    })
}

/// The first thread's handles on the speculative thread.
struct Second<'scope, 'a> {
    handle: std::thread::ScopedJoinHandle<'scope, Speculation>,
    /// Where its sync candidates arrive.
    candidates: &'a mpsc::Receiver<Vec<Cursor>>,
    /// Set to stop it.
    cancel: &'a AtomicBool,
}

/// The first thread's part of [`speculative`]: decode to the split, look for sync, merge.
fn first_thread(
    scan: &Scan<'_>,
    coefs: &mut [i16],
    cursor: Cursor,
    target: usize,
    trace: &mut Trace,
    second: Second<'_, '_>,
) -> Result<()> {
    let Second {
        handle,
        candidates,
        cancel,
    } = second;
    // No sync: stop the second thread (its work is of no use) and decode on alone.
    let alone = |coefs: &mut [i16], at: Cursor| {
        cancel.store(true, Ordering::Relaxed);
        scan.to_end(coefs, at)
    };
    let layout = scan.layout;
    let total = layout.total_mcus;
    let mut at = cursor;
    let split_bit = target as u64 * 8;
    let halt = decode(
        &mut scan.target(coefs, 0),
        &mut at,
        total,
        split_bit,
        &mut Unobserved,
    )?;
    if halt == Halt::Finished {
        return Ok(());
    }
    // The candidates come within a millisecond of the second thread's start; an error
    // before it sent any means there are none.
    let waiting = Instant::now();
    let records = candidates.recv().unwrap_or_default();
    trace.waited_for_second = waiting.elapsed();
    let mut matcher = Matcher {
        records: &records,
        next: 0,
        found: None,
    };
    let halt = decode(
        &mut scan.target(coefs, 0),
        &mut at,
        total,
        BitPos::MAX,
        &mut matcher,
    )?;
    let Some(sync) = matcher.found.filter(|_| halt == Halt::Observed) else {
        return alone(coefs, at);
    };
    let waiting = Instant::now();
    let joined = handle.join();
    trace.waited_for_second += waiting.elapsed();
    let Ok(spec) = joined else {
        return alone(coefs, at);
    };
    trace.speculative_restarts = spec.restarts;
    let (bpm, slots) = (layout.bpm, layout.slots);
    let src_from = sync.mcu * bpm + sync.blk;
    let src_to = (spec.end.mcu * bpm + spec.end.blk).min(spec.coefs.len() / slots);
    let dst_from = at.mcu * bpm + at.blk;
    let count = src_to
        .saturating_sub(src_from)
        .min((total * bpm).saturating_sub(dst_from));
    if count == 0 {
        return alone(coefs, at);
    }
    trace.synced_after = Some(usize::try_from(sync.bitpos / 8).unwrap_or(usize::MAX) - target);
    trace.second_thread_mcus = count / bpm;
    // The true predictors minus the second thread's, per component, at the sync point.
    let delta: [i16; 3] = std::array::from_fn(|c| at.preds[c].wrapping_sub(sync.preds[c]));
    let (Some(dst), Some(src)) = (
        coefs.get_mut(dst_from * slots..(dst_from + count) * slots),
        spec.coefs.get(src_from * slots..(src_from + count) * slots),
    ) else {
        return Err(Error::Undecodable(
            "JPEG speculative merge out of range".into(),
        ));
    };
    dst.copy_from_slice(src);
    for (i, block) in dst.chunks_exact_mut(slots).enumerate() {
        let comp = layout.block_comp[(dst_from + i) % bpm].min(2);
        block[0] = block[0].wrapping_add(delta[comp]);
    }
    let resume = dst_from + count;
    if resume >= total * bpm {
        return Ok(());
    }
    // The second thread stopped early (an error, or data running out): carry on from its
    // end, which meets the same error as a one-thread decode would.
    let end = Cursor {
        mcu: resume / bpm,
        blk: resume % bpm,
        bitpos: spec.end.bitpos,
        preds: std::array::from_fn(|c| spec.end.preds[c].wrapping_add(delta[c])),
    };
    scan.to_end(coefs, end)
}

/// Finds the first block start of the first thread equal to a recorded one.
struct Matcher<'r> {
    records: &'r [Cursor],
    next: usize,
    found: Option<Cursor>,
}

impl Observer for Matcher<'_> {
    const ACTIVE: bool = true;
    fn block(&mut self, at: &Cursor) -> bool {
        while self
            .records
            .get(self.next)
            .is_some_and(|r| r.bitpos < at.bitpos)
        {
            self.next += 1;
        }
        match self.records.get(self.next) {
            // Past every candidate: no sync; stop looking.
            None => true,
            Some(r) if r.bitpos == at.bitpos && r.blk == at.blk => {
                self.found = Some(*r);
                true
            }
            Some(_) => false,
        }
    }
}

/// Records the first `limit` block starts.
struct Recorder {
    records: Vec<Cursor>,
    limit: usize,
}

impl Observer for Recorder {
    const ACTIVE: bool = true;
    fn block(&mut self, at: &Cursor) -> bool {
        if self.records.len() < self.limit {
            self.records.push(*at);
        }
        false
    }
}

/// The second thread: decodes from byte `start` as if an MCU began there, records its
/// first block starts, publishes them, and decodes on until the end, an error or
/// `cancel`.
fn speculate(
    scan: &Scan<'_>,
    mut start: usize,
    candidates: usize,
    cancel: &AtomicBool,
    publish: mpsc::SyncSender<Vec<Cursor>>,
) -> Speculation {
    let total = scan.layout.total_mcus;
    let mut restarts = 0;
    // Room for the share of the coefficients its share of the data holds, plus a tenth,
    // so that growing the vector rarely copies it.
    let all = scan.layout.coefficients(total) as u128;
    let share =
        all * scan.data.len().saturating_sub(start) as u128 / scan.data.len().max(1) as u128;
    let room = usize::try_from((share + share / 10).min(all)).unwrap_or(0);
    loop {
        let mut coefs = Vec::with_capacity(room);
        let mut at = Cursor::at(0, start as u64 * 8);
        let mut recorder = Recorder {
            records: Vec::with_capacity(candidates),
            limit: candidates,
        };
        let mut failed = false;
        while recorder.records.len() < candidates && at.mcu < total {
            if chunk(scan, &mut coefs, &mut at, &mut recorder).is_err() {
                failed = true;
                break;
            }
        }
        // An error near the end of the data is the data ending, not garbage: keep what
        // was recorded (it may well be in sync).
        let failed_at = usize::try_from(at.bitpos / 8).unwrap_or(usize::MAX);
        let near_end = failed_at.saturating_add(MAX_MCU_BYTES) >= scan.data.len();
        if failed && !near_end && restarts < MAX_SPECULATIVE_RESTARTS {
            restarts += 1;
            start = start.max(failed_at) + 1;
            continue;
        }
        // The receiver may be gone (the first thread failed): nothing to do about it.
        let _ = publish.send(recorder.records);
        while !failed && at.mcu < total && !cancel.load(Ordering::Relaxed) {
            failed = chunk(scan, &mut coefs, &mut at, &mut Unobserved).is_err();
        }
        return Speculation {
            coefs,
            end: at,
            restarts,
        };
    }
}

/// Decodes up to [`CHUNK_MCUS`] more MCUs, growing `coefs` for them.
fn chunk<O: Observer>(
    scan: &Scan<'_>,
    coefs: &mut Vec<i16>,
    at: &mut Cursor,
    observer: &mut O,
) -> Result<()> {
    let end = (at.mcu + CHUNK_MCUS).min(scan.layout.total_mcus);
    coefs.resize(scan.layout.coefficients(end), 0);
    let halt = decode(&mut scan.target(coefs, 0), at, end, BitPos::MAX, observer)?;
    debug_assert_eq!(halt, Halt::Finished);
    Ok(())
}
