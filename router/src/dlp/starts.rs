//! Candidate starts, read 64 bytes at a time.
//!
//! A personal-data match starts at a byte that can begin one of its automaton's patterns, after
//! a byte that is not an ASCII word byte (every pattern starts with `\b{start-half}`), and never
//! inside a UTF-8 character. In a text dense with digits such a start comes every few bytes, so
//! finding the next one byte by byte cost about as much as the walks from them. Here a block of
//! 64 bytes is classified at once, 16 bytes to a vector, into a mask of its starts, and the
//! scan takes them off the mask one at a time.

use wide::u8x16;

use super::trigger::ByteSet;

/// The bytes a match can begin with, and how to find them in a block.
pub(super) struct StartBytes {
    /// Per byte: bit 1 says it can begin a match, bit 0 that it is an ASCII word byte.
    flags: [u8; 256],
    /// The start bytes as ranges, for the vector test; `None` when there are too many.
    ranges: Option<Ranges>,
}

/// Above this many ranges of start bytes, a block is read byte by byte instead.
const MAX_RANGES: usize = 12;

impl StartBytes {
    /// From the bytes that can begin a match; those inside a UTF-8 character (0x80 to 0xBF)
    /// are dropped, since no match starts there.
    pub(super) fn new(starts: &ByteSet) -> Self {
        let starts = ByteSet::from_fn(|b| starts.contains(b) && !(0x80..0xC0).contains(&b));
        let mut ranges: Vec<(u8, u8)> = Vec::new();
        for b in (0..=255u8).filter(|&b| starts.contains(b)) {
            match ranges.last_mut() {
                Some((_, hi)) if *hi + 1 == b => *hi = b,
                _ => ranges.push((b, b)),
            }
        }
        Self {
            flags: std::array::from_fn(|b| {
                u8::from(starts.contains(b as u8)) << 1 | u8::from(is_word_byte(b as u8))
            }),
            ranges: (ranges.len() <= MAX_RANGES).then(|| Ranges::new(&ranges)),
        }
    }

    /// Bit `j` is set when `hay[base + j]` starts a candidate: a start byte after a byte that
    /// is not a word byte, or at the start of the text. Bits past the text are clear.
    #[inline(never)]
    pub(super) fn block(&self, hay: &[u8], base: usize) -> u64 {
        let mut padded = [0u8; 64];
        let chunk: &[u8; 64] = match hay.get(base..base + 64) {
            Some(full) => full.try_into().expect("64 bytes"),
            None => {
                let rest = &hay[base.min(hay.len())..];
                padded[..rest.len()].copy_from_slice(rest);
                &padded
            }
        };
        let (starts, words) = match &self.ranges {
            Some(ranges) => masks(chunk, ranges),
            None => self.masks_bytewise(chunk),
        };
        let word_before = u64::from(base > 0 && is_word_byte(hay[base - 1]));
        starts & !(words << 1 | word_before)
    }

    fn masks_bytewise(&self, chunk: &[u8; 64]) -> (u64, u64) {
        let (mut starts, mut words) = (0u64, 0u64);
        for (j, &b) in chunk.iter().enumerate() {
            let flags = self.flags[usize::from(b)];
            starts |= u64::from(flags >> 1) << j;
            words |= u64::from(flags & 1) << j;
        }
        (starts, words)
    }
}

/// Whether a byte is an ASCII word byte, as `\b` without Unicode sees it.
pub(super) const fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Where a scan is in the text: the current block's starts not yet taken.
pub(super) struct StartCursor {
    block: usize,
    mask: u64,
}

impl Default for StartCursor {
    fn default() -> Self {
        Self {
            block: usize::MAX,
            mask: 0,
        }
    }
}

impl StartCursor {
    /// The first candidate start in `from..to`. Calls go forward through the text.
    #[inline(always)]
    pub(super) fn next(
        &mut self,
        bytes: &StartBytes,
        hay: &[u8],
        mut from: usize,
        to: usize,
    ) -> Option<usize> {
        while from < to {
            let block = from / 64;
            if block != self.block {
                self.block = block;
                self.mask = bytes.block(hay, block * 64);
            }
            let ahead = self.mask & (u64::MAX << (from % 64));
            if ahead != 0 {
                let at = block * 64 + ahead.trailing_zeros() as usize;
                return (at < to).then_some(at);
            }
            from = (block + 1) * 64;
        }
        None
    }
}

/// A set of bytes as the vectors that test for it: ranges `lo..=hi` (as `lo` and `hi - lo`),
/// and single bytes.
struct Ranges {
    spans: Vec<(u8x16, u8x16)>,
    ones: Vec<u8x16>,
}

impl Ranges {
    fn new(ranges: &[(u8, u8)]) -> Self {
        let (ones, spans): (Vec<_>, Vec<_>) = ranges.iter().partition(|(lo, hi)| lo == hi);
        Self {
            spans: spans
                .into_iter()
                .map(|(lo, hi)| (u8x16::splat(lo), u8x16::splat(hi - lo)))
                .collect(),
            ones: ones.into_iter().map(|(b, _)| u8x16::splat(b)).collect(),
        }
    }

    /// All ones in each lane whose byte is in the set, for four vectors at once (each test's
    /// constants are read once per block).
    #[inline(always)]
    fn test(&self, v: &[u8x16; 4]) -> [u8x16; 4] {
        let mut hits = [u8x16::ZERO; 4];
        for &(lo, width) in &self.spans {
            for (hit, &v) in hits.iter_mut().zip(v) {
                *hit |= span(v, lo, width);
            }
        }
        for &b in &self.ones {
            for (hit, &v) in hits.iter_mut().zip(v) {
                *hit |= v.simd_eq(b);
            }
        }
        hits
    }
}

/// All ones in each lane whose byte lies in `lo..=lo + width`: `v - lo <= width`, wrapping and
/// unsigned, in three instructions.
#[inline(always)]
fn span(v: u8x16, lo: u8x16, width: u8x16) -> u8x16 {
    let d = v - lo;
    d.min(width).simd_eq(d)
}

/// Per byte of the block, whether it is in the set, and whether it is a word byte.
#[inline(always)]
fn masks(chunk: &[u8; 64], set: &Ranges) -> (u64, u64) {
    let (digit, digits) = (u8x16::splat(b'0'), u8x16::splat(9));
    let (letter, letters) = (u8x16::splat(b'a'), u8x16::splat(25));
    let (case, underscore) = (u8x16::splat(0x20), u8x16::splat(b'_'));
    let v: [u8x16; 4] = std::array::from_fn(|k| {
        u8x16::new(chunk[16 * k..16 * k + 16].try_into().expect("16 bytes"))
    });
    let hits = set.test(&v);
    let (mut starts, mut words) = (0u64, 0u64);
    for k in 0..4 {
        // Setting bit 5 maps `A-Z` onto `a-z` and moves no other byte into it.
        let w = span(v[k], digit, digits)
            | span(v[k] | case, letter, letters)
            | v[k].simd_eq(underscore);
        starts |= u64::from(hits[k].to_bitmask()) << (16 * k);
        words |= u64::from(w.to_bitmask()) << (16 * k);
    }
    (starts, words)
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    /// The starts as the scan once read them, byte by byte.
    fn bytewise(starts: &ByteSet, hay: &[u8], from: usize, to: usize) -> Vec<usize> {
        (from..to)
            .filter(|&i| {
                starts.contains(hay[i])
                    && !(0x80..0xC0).contains(&hay[i])
                    && (i == 0 || !is_word_byte(hay[i - 1]))
            })
            .collect()
    }

    #[test]
    fn block_starts_agree_with_reading_byte_by_byte() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let alphabet = b"0123456789abczAZ_-:@ (+.\x80\xbf\xe4\xff\x00";
        for round in 0..300 {
            // A few ranges, or a scattered set with too many ranges for the vector test.
            let scattered = round % 3 == 0;
            let set = if scattered {
                let bits: [bool; 256] = std::array::from_fn(|_| rng.random_bool(0.4));
                ByteSet::from_fn(|b| bits[b as usize])
            } else {
                let (a, b) = (rng.random::<u8>(), rng.random::<u8>());
                let (c, d) = (rng.random_range(b'0'..=b'9'), rng.random_range(b'a'..=b'z'));
                ByteSet::from_fn(|x| (a.min(b)..=a.max(b)).contains(&x) || x == c || x == d)
            };
            let bytes = StartBytes::new(&set);
            let len = rng.random_range(0..300);
            let hay: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            let from = rng.random_range(0..=len);
            let to = rng.random_range(from..=len);
            let mut cursor = StartCursor::default();
            let mut found = Vec::new();
            let mut pos = from;
            while let Some(s) = cursor.next(&bytes, &hay, pos, to) {
                found.push(s);
                pos = s + 1;
            }
            assert_eq!(found, bytewise(&set, &hay, from, to), "round {round}");
            for base in (0..len).step_by(64) {
                let chunk: [u8; 64] =
                    std::array::from_fn(|j| hay.get(base + j).copied().unwrap_or(0));
                if let Some(ranges) = &bytes.ranges {
                    assert_eq!(
                        masks(&chunk, ranges),
                        bytes.masks_bytewise(&chunk),
                        "round {round}"
                    );
                }
            }
        }
    }
}
