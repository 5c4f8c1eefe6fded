//! Candidate starts, found 64 bytes at a time.
//!
//! A personal-data match starts at a byte that can begin one of its automaton's patterns, after
//! a byte that is not an ASCII word byte (every pattern starts with `\b{start-half}`), and never
//! inside a UTF-8 character. In a text dense with digits such a start comes every few bytes, so
//! finding the next one byte by byte cost about as much as the walks from them. Here a block of
//! 64 bytes is classified at once, 16 bytes to a vector (`wide`: SSE2 on x86-64, NEON on
//! aarch64, scalar elsewhere), into a mask, and the scan takes its bits one at a time.

use wide::u8x16;

use super::trigger::ByteSet;

/// Above this many ranges in a set, a block is read byte by byte instead.
const MAX_RANGES: usize = 12;

/// The bytes a match can begin with.
pub(super) struct StartBytes {
    table: [bool; 256],
    /// The set as vector tests, when it has few enough ranges.
    vector: Option<Ranges>,
}

impl StartBytes {
    /// From the bytes that can begin a match; those inside a UTF-8 character (0x80 to 0xBF)
    /// are dropped, since no match starts there.
    pub(super) fn new(starts: &ByteSet) -> Self {
        let set = ByteSet::from_fn(|b| starts.contains(b) && !(0x80..0xC0).contains(&b));
        let ranges = ranges(&set);
        Self {
            table: std::array::from_fn(|b| set.contains(b as u8)),
            vector: (ranges.len() <= MAX_RANGES).then(|| Ranges::new(&ranges)),
        }
    }

    /// Bit `j` set: `chunk[j]` is a start byte.
    fn members(&self, chunk: &[u8; 64]) -> u64 {
        match &self.vector {
            Some(ranges) => bitmask(ranges.test(&vectors(chunk))),
            None => chunk.iter().enumerate().fold(0, |m, (j, &b)| {
                m | u64::from(self.table[usize::from(b)]) << j
            }),
        }
    }

    /// Bit `j` set: `hay[base + j]` is a start byte after a byte that is not a word byte, or
    /// at the start of the text. Bits past the text are clear.
    #[inline(never)]
    fn block(&self, hay: &[u8], base: usize) -> u64 {
        let (chunk, valid) = chunk(hay, base);
        let word_before = u64::from(base > 0 && is_word_byte(hay[base - 1]));
        self.members(&chunk) & !(words(&chunk) << 1 | word_before) & valid
    }
}

/// The 64 bytes from `base` (zeros past the end of the text), and a mask of those in the text.
#[inline(always)]
fn chunk(hay: &[u8], base: usize) -> ([u8; 64], u64) {
    match hay.get(base..base + 64) {
        Some(full) => (full.try_into().expect("64 bytes"), u64::MAX),
        None => {
            let rest = &hay[base.min(hay.len())..];
            let mut padded = [0u8; 64];
            padded[..rest.len()].copy_from_slice(rest);
            (padded, (1u64 << rest.len()) - 1)
        }
    }
}

/// Whether a byte is an ASCII word byte, as `\b` without Unicode sees it.
pub(super) const fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Where a scan is in the text: the current block's starts not yet taken.
pub(super) struct Cursor {
    block: usize,
    mask: u64,
}

impl Default for Cursor {
    fn default() -> Self {
        Self {
            block: usize::MAX,
            mask: 0,
        }
    }
}

impl Cursor {
    /// The first candidate start in `from..to`. Calls go forward through the text.
    #[inline(always)]
    pub(super) fn next(
        &mut self,
        starts: &StartBytes,
        hay: &[u8],
        mut from: usize,
        to: usize,
    ) -> Option<usize> {
        while from < to {
            let block = from / 64;
            if block != self.block {
                self.block = block;
                self.mask = starts.block(hay, block * 64);
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

/// The maximal ranges `lo..=hi` of a set, in order.
fn ranges(set: &ByteSet) -> Vec<(u8, u8)> {
    let mut ranges: Vec<(u8, u8)> = Vec::new();
    for b in (0..=255u8).filter(|&b| set.contains(b)) {
        match ranges.last_mut() {
            Some((_, hi)) if *hi + 1 == b => *hi = b,
            _ => ranges.push((b, b)),
        }
    }
    ranges
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

#[inline(always)]
fn vectors(chunk: &[u8; 64]) -> [u8x16; 4] {
    std::array::from_fn(|k| u8x16::new(chunk[16 * k..16 * k + 16].try_into().expect("16 bytes")))
}

/// Bit `16 k + j`: lane `j` of vector `k` is all ones.
#[inline(always)]
fn bitmask(v: [u8x16; 4]) -> u64 {
    v.iter()
        .enumerate()
        .fold(0, |m, (k, v)| m | u64::from(v.to_bitmask()) << (16 * k))
}

/// Per byte of the block, whether it is a word byte.
#[inline(always)]
fn words(chunk: &[u8; 64]) -> u64 {
    let (digit, digits) = (u8x16::splat(b'0'), u8x16::splat(9));
    let (letter, letters) = (u8x16::splat(b'a'), u8x16::splat(25));
    let (case, underscore) = (u8x16::splat(0x20), u8x16::splat(b'_'));
    // Setting bit 5 maps `A-Z` onto `a-z` and moves no other byte into it.
    bitmask(
        vectors(chunk).map(|v| {
            span(v, digit, digits) | span(v | case, letter, letters) | v.simd_eq(underscore)
        }),
    )
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    fn random_set(rng: &mut impl Rng, round: usize) -> ByteSet {
        if round.is_multiple_of(3) {
            // Scattered: too many ranges for the vector test.
            let bits: [bool; 256] = std::array::from_fn(|_| rng.random_bool(0.4));
            ByteSet::from_fn(|b| bits[b as usize])
        } else {
            let (a, b) = (rng.random::<u8>(), rng.random::<u8>());
            let (c, d) = (rng.random_range(b'0'..=b'9'), rng.random_range(b'a'..=b'z'));
            let caseless = round.is_multiple_of(2);
            ByteSet::from_fn(|x| {
                (a.min(b)..=a.max(b)).contains(&x)
                    || x == c
                    || x == d
                    || (caseless && x == d.to_ascii_uppercase())
            })
        }
    }

    fn random_text(rng: &mut impl Rng) -> Vec<u8> {
        let alphabet = b"0123456789abczAZ_-:@ (+.\r\x80\xbf\xe4\xff\x00";
        let len = rng.random_range(0..300);
        (0..len)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())])
            .collect()
    }

    /// Every start the cursor gives in `from..to`.
    fn taken(starts: &StartBytes, hay: &[u8], from: usize, to: usize) -> Vec<usize> {
        let mut cursor = Cursor::default();
        let mut found = Vec::new();
        let mut pos = from;
        while let Some(s) = cursor.next(starts, hay, pos, to) {
            found.push(s);
            pos = s + 1;
        }
        found
    }

    #[test]
    fn block_starts_agree_with_reading_byte_by_byte() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for round in 0..300 {
            let set = random_set(&mut rng, round);
            let hay = random_text(&mut rng);
            let from = rng.random_range(0..=hay.len());
            let to = rng.random_range(from..=hay.len());
            let bytewise: Vec<usize> = (from..to)
                .filter(|&i| {
                    set.contains(hay[i])
                        && !(0x80..0xC0).contains(&hay[i])
                        && (i == 0 || !is_word_byte(hay[i - 1]))
                })
                .collect();
            let starts = StartBytes::new(&set);
            assert_eq!(taken(&starts, &hay, from, to), bytewise, "round {round}");
        }
    }

    /// The vector test and the table agree on every set small enough for the vector test.
    #[test]
    fn vector_and_table_members_agree() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        for round in 0..300 {
            let mask = StartBytes::new(&random_set(&mut rng, round));
            let chunk: [u8; 64] = std::array::from_fn(|_| rng.random());
            let table = chunk.iter().enumerate().fold(0, |m, (j, &b)| {
                m | u64::from(mask.table[usize::from(b)]) << j
            });
            assert_eq!(mask.members(&chunk), table, "round {round}");
        }
    }
}
