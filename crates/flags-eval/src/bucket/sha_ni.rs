//! The bucketing hash with the x86 SHA extensions, the message assembled in vector registers.
//!
//! SHA-1 reads each 64-byte block as sixteen big-endian 32-bit words; the SHA instructions take
//! them four to a register, the first word in the highest lane. A register holding bytes
//! `16c..16c + 16` of a block, byte-reversed, is exactly words `4c..4c + 4` in that order, so the
//! prefix is kept byte-reversed ([`Template`]) and the value's bytes are shuffled straight into
//! reversed positions. Nothing of the block is stored to memory between its assembly and the
//! rounds, so no vector load waits on narrower stores (a store-forwarding stall).

use core::arch::x86_64::{
    __m128i, _mm_add_epi8, _mm_add_epi32, _mm_adds_epu8, _mm_and_si128, _mm_cmpeq_epi8,
    _mm_cvtsi64_si128, _mm_extract_epi64, _mm_or_si128, _mm_set_epi8, _mm_set_epi64x,
    _mm_set1_epi8, _mm_setzero_si128, _mm_sha1msg1_epu32, _mm_sha1msg2_epu32, _mm_sha1nexte_epu32,
    _mm_sha1rnds4_epu32, _mm_shuffle_epi8, _mm_xor_si128,
};

use super::{ONE_BLOCK, TWO_BLOCKS};

/// A bucketing prefix prepared for [`Template::hash`]. One exists only on a CPU with the SHA
/// extensions, SSE2, SSSE3 and SSE4.1 ([`Template::new`] checks), which is what makes calling
/// the `target_feature` code sound.
#[derive(Debug, Clone, Copy)]
pub(super) struct Template {
    /// The prefix's last partial block (after its whole 64-byte blocks) followed by zeros, as the
    /// block's four message-word registers (each 16 bytes byte-reversed, as 128-bit integers).
    words: [u128; 4],
    /// The SHA-1 state after the prefix's whole blocks as a register: A, B, C, D from the
    /// highest 32 bits down.
    abcd: u128,
    /// The state's E, in the highest 32 bits.
    e: u128,
    /// How many of the next block's first four-round groups read only prefix bytes (one per 16
    /// bytes of `tail`, so 0 to 3): those rounds are done here, once.
    done: usize,
    /// A, B, C, D after those groups.
    after: u128,
    /// A, B, C, D after all of them but the last (whose A gives the next group's E).
    before: u128,
    /// The length of the prefix's last partial block, below 64.
    tail: usize,
    /// The length of the whole prefix.
    prefix_len: u64,
}

impl Template {
    /// The template for a prefix of `prefix_len` bytes whose whole blocks leave SHA-1 `state`
    /// and whose remaining bytes, followed by zeros, are `block` (`tail` bytes long); `None`
    /// when this CPU lacks the instructions [`Template::hash`] uses.
    pub(super) fn new(
        state: [u32; 5],
        block: &[u8; 64],
        tail: usize,
        prefix_len: u64,
    ) -> Option<Template> {
        let detected = std::is_x86_feature_detected!("sha")
            && std::is_x86_feature_detected!("sse2")
            && std::is_x86_feature_detected!("ssse3")
            && std::is_x86_feature_detected!("sse4.1");
        if !detected || tail >= 64 {
            return None;
        }
        let mut words = [0; 4];
        for (word, chunk) in words.iter_mut().zip(block.as_chunks::<16>().0) {
            // Big-endian: the block's first byte becomes the register's highest byte.
            *word = u128::from_be_bytes(*chunk);
        }
        let done = tail / 16;
        let (after, before) = first_rounds(state, block, 4 * done);
        let e = u128::from(state[4]) << 96;
        Some(Template {
            words,
            abcd: register(state),
            e,
            done,
            after: register(after),
            before: register(before),
            tail,
            prefix_len,
        })
    }

    /// The first 60 bits of the SHA-1 of the prefix followed by `value`, or `None` when the
    /// prefix's last partial block and `value` need more than two blocks.
    #[inline]
    #[allow(unsafe_code)]
    pub(super) fn hash(&self, value: &[u8]) -> Option<u64> {
        if self.tail + value.len() > TWO_BLOCKS {
            return None;
        }
        // SAFETY: `prefix60` needs the `sha`, `sse2`, `ssse3` and `sse4.1` target features, and
        // a `Template` is only ever made by `Template::new` (or copied from one), after it
        // detected all four on this CPU: its fields are private to this module, which builds it
        // nowhere else. The length bound `prefix60` documents is checked just above.
        Some(unsafe { prefix60(self, value) })
    }
}

/// A, B, C, D as a register: A in the highest 32 bits.
fn register([a, b, c, d, ..]: [u32; 5]) -> u128 {
    let [a, b, c, d] = [a, b, c, d].map(u128::from);
    a << 96 | b << 64 | c << 32 | d
}

/// SHA-1's first `rounds` rounds (at most 20, a multiple of 4) of the block after `state`, as
/// FIPS 180-4 (6.1.2) defines them: the state after them, and the state four rounds before
/// that (the given state when there are none).
fn first_rounds(state: [u32; 5], block: &[u8; 64], rounds: usize) -> ([u32; 5], [u32; 5]) {
    let [mut a, mut b, mut c, mut d, mut e] = state;
    let mut before = state;
    for (t, word) in block.as_chunks::<4>().0.iter().take(rounds).enumerate() {
        if t % 4 == 0 {
            before = [a, b, c, d, e];
        }
        // Rounds 0-19: Ch(b, c, d) and K = 0x5A827999.
        let f = (b & c) | (!b & d);
        let sum = a
            .rotate_left(5)
            .wrapping_add(f)
            .wrapping_add(e)
            .wrapping_add(0x5A82_7999)
            .wrapping_add(u32::from_be_bytes(*word));
        (a, b, c, d, e) = (sum, a, b.rotate_left(30), c, d);
    }
    ([a, b, c, d, e], before)
}

/// A register from a 128-bit integer (its low byte in the lowest lane).
#[target_feature(enable = "sse2")]
#[inline]
fn from_u128(x: u128) -> __m128i {
    _mm_set_epi64x((x >> 64) as u64 as i64, x as u64 as i64)
}

/// A value shorter than 16 bytes followed by its 0x80 terminator and zeros, 16 bytes in all,
/// as their low and high 8 bytes: the value is read with at most two (overlapping) loads from
/// its two ends.
#[inline(always)]
fn short_message(v: &[u8]) -> (u64, u64) {
    let n = v.len();
    if let (Some(a), Some(b)) = (v.first_chunk::<8>(), v.last_chunk::<8>()) {
        // Bytes 8..n are the last n - 8 of `b`; two shifts, as the total (64 for n = 8) may
        // be too wide for one.
        let b = (u64::from_le_bytes(*b) >> (8 * (15 - n))) >> 8;
        (u64::from_le_bytes(*a), b | 0x80 << (8 * (n - 8)))
    } else if let (Some(a), Some(b)) = (v.first_chunk::<4>(), v.last_chunk::<4>()) {
        let (a, b) = (u32::from_le_bytes(*a), u32::from_le_bytes(*b));
        (
            u64::from(a) | u64::from(b) << (8 * (n - 4)) | 0x80 << (8 * n),
            0,
        )
    } else if let (Some(&a), Some(&b)) = (v.first(), v.last()) {
        // 1 to 3 bytes: the first, the middle and the last cover them.
        let mid = n / 2;
        let x = u64::from(a) | u64::from(v[mid]) << (8 * mid) | u64::from(b) << (8 * (n - 1));
        (x | 0x80 << (8 * n), 0)
    } else {
        (0x80, 0)
    }
}

/// For each lane of the first block's first message-word register, the position of its byte
/// relative to the value's start: lane i holds block byte 15 - i, which is value byte
/// 15 - i - tail.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
fn value_lanes(tail: usize) -> __m128i {
    let reversed = _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    _mm_add_epi8(
        reversed,
        _mm_set1_epi8((tail as isize).wrapping_neg() as i8),
    )
}

/// The bytes of `source` that a window `offset` bytes after [`value_lanes`]'s lands on, in its
/// lanes (zeros where it lands outside `source`), and the shuffle indices that picked them.
///
/// One byte shuffle moves the bytes; a shuffle index with its top bit set gives zero. The
/// indices stay within -63..=127 (a window starts at most 63 bytes before the value and 112
/// bytes into the blocks), so they fit an i8, and a saturating add of 0x70 keeps the low four
/// bits of 0..=15 with the top bit clear and sets it for everything else.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
fn shifted(source: __m128i, lanes: __m128i, offset: isize) -> (__m128i, __m128i) {
    let index = _mm_add_epi8(lanes, _mm_set1_epi8(offset as i8));
    let clear = _mm_adds_epu8(index, _mm_set1_epi8(0x70));
    (_mm_shuffle_epi8(source, clear), index)
}

/// The message-word register for block bytes `16 * chunk..16 * chunk + 16`: the template's and
/// the value's, the value (with its terminator) starting at byte `tail` of the first block;
/// `lanes` is [`value_lanes`] of `tail`.
///
/// `SHORT`: the value is shorter than 16 bytes, and `short` holds it with its terminator
/// ([`short_message`]). Otherwise the 16 value bytes nearest the window are loaded, and the
/// terminator goes where the shuffle index names the byte just past the value.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
fn word<const SHORT: bool>(
    template: __m128i,
    value: &[u8],
    short: __m128i,
    tail: usize,
    lanes: __m128i,
    chunk: usize,
) -> __m128i {
    // The window's start, relative to the value's.
    let at = (16 * chunk) as isize - tail as isize;
    let bytes = if SHORT {
        shifted(short, lanes, 16 * chunk as isize).0
    } else {
        // Value bytes base..base + 16: inside the value, and holding every value byte of the
        // window (which starts in them, or lies wholly before or after the value).
        let n = value.len();
        let base = at.clamp(0, n.saturating_sub(16) as isize) as usize;
        let loaded = value
            .get(base..)
            .and_then(<[u8]>::first_chunk::<16>)
            .map_or(0, |b| u128::from_le_bytes(*b));
        let (bytes, index) = shifted(from_u128(loaded), lanes, (16 * chunk - base) as isize);
        // The value's end is byte n - base of the loaded bytes (16 to 119).
        let end = _mm_cmpeq_epi8(index, _mm_set1_epi8((n - base) as i8));
        _mm_or_si128(bytes, _mm_and_si128(end, _mm_set1_epi8(0x80_u8 as i8)))
    };
    _mm_or_si128(template, bytes)
}

/// One SHA-1 compression: the state (`abcd`, and `e` in its highest lane) after the block whose
/// message words are `w`, four to a register, first word highest.
///
/// The first `done` groups of four rounds (0 to 3) are already done: `after` is the state after
/// them and `before` the state four rounds earlier (both `abcd` when `done` is 0). The groups
/// are skipped with branches rather than by a copy of this code per count, which would take
/// far more code than the branches (each taken or not the same way for a given prefix) cost.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
fn compress(
    abcd: __m128i,
    e: __m128i,
    after: __m128i,
    before: __m128i,
    done: usize,
    w: [__m128i; 4],
) -> (__m128i, __m128i) {
    let [mut w0, mut w1, mut w2, mut w3] = w;
    // Four rounds at a time (SHA1RNDS4, its immediate picking the round function and constant
    // of rounds 0-19, 20-39, 40-59 or 60-79). The first four add E to their first word; each
    // later four add A from before the previous four rotated left by 30 (SHA1NEXTE), which is
    // what E has become by then.
    let (mut state, mut before) = (after, before);
    if done == 0 {
        before = state;
        state = _mm_sha1rnds4_epu32::<0>(state, _mm_add_epi32(e, w0));
    }
    macro_rules! rounds {
        ($f:literal, $w:ident) => {{
            let e = _mm_sha1nexte_epu32(before, $w);
            before = state;
            state = _mm_sha1rnds4_epu32::<$f>(state, e);
        }};
    }
    // Words 16 onwards, four at a time into the register of the words 16 before them:
    // w[t] = rotl1(w[t-3] ^ w[t-8] ^ w[t-14] ^ w[t-16]). SHA1MSG1 gives w[t-16] ^ w[t-14],
    // XOR adds w[t-8], and SHA1MSG2 adds w[t-3] (including the words it makes) and rotates.
    macro_rules! next {
        ($f:literal, $a:ident, $b:ident, $c:ident, $d:ident) => {{
            $a = _mm_sha1msg2_epu32(_mm_xor_si128(_mm_sha1msg1_epu32($a, $b), $c), $d);
            rounds!($f, $a);
        }};
    }
    if done <= 1 {
        rounds!(0, w1);
    }
    if done <= 2 {
        rounds!(0, w2);
    }
    rounds!(0, w3);
    next!(0, w0, w1, w2, w3);
    next!(1, w1, w2, w3, w0);
    next!(1, w2, w3, w0, w1);
    next!(1, w3, w0, w1, w2);
    next!(1, w0, w1, w2, w3);
    next!(1, w1, w2, w3, w0);
    next!(2, w2, w3, w0, w1);
    next!(2, w3, w0, w1, w2);
    next!(2, w0, w1, w2, w3);
    next!(2, w1, w2, w3, w0);
    next!(2, w2, w3, w0, w1);
    next!(3, w3, w0, w1, w2);
    next!(3, w0, w1, w2, w3);
    next!(3, w1, w2, w3, w0);
    next!(3, w2, w3, w0, w1);
    next!(3, w3, w0, w1, w2);
    // Add the block's result to the state it started from.
    (_mm_add_epi32(state, abcd), _mm_sha1nexte_epu32(before, e))
}

/// The first 60 bits of the SHA-1 of the template's prefix followed by `value`: one or two
/// compressions from the prefix's state, every block assembled in registers.
///
/// The prefix's last partial block and `value` must fit two blocks with their padding:
/// `template.tail + value.len() <= TWO_BLOCKS`.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn prefix60(template: &Template, value: &[u8]) -> u64 {
    let n = value.len();
    let (tail, done) = (template.tail, template.done);
    let lanes = value_lanes(tail);
    debug_assert!(tail + n <= TWO_BLOCKS && done <= 3);
    let short = if n < 16 {
        let (low, high) = short_message(value);
        _mm_set_epi64x(high as i64, low as i64)
    } else {
        _mm_setzero_si128()
    };
    // The message length in bits, big-endian in the last 8 bytes of the last block: in the
    // last register's lowest 64 bits, which hold those bytes reversed.
    let bits = _mm_cvtsi64_si128(((template.prefix_len + n as u64) * 8) as i64);
    let [t0, t1, t2, t3] = template.words;
    let [t0, t1, t2, t3] = [from_u128(t0), from_u128(t1), from_u128(t2), from_u128(t3)];
    let (abcd, e) = (from_u128(template.abcd), from_u128(template.e));
    let (after, before) = (from_u128(template.after), from_u128(template.before));
    let w0 = chunk_word(t0, value, short, tail, lanes, done, 0);
    let w1 = chunk_word(t1, value, short, tail, lanes, done, 1);
    let w2 = chunk_word(t2, value, short, tail, lanes, done, 2);
    let w3 = chunk_word(t3, value, short, tail, lanes, done, 3);
    let one_block = tail + n <= ONE_BLOCK;
    let w3 = if one_block {
        _mm_or_si128(w3, bits)
    } else {
        w3
    };
    let first = compress(abcd, e, after, before, done, [w0, w1, w2, w3]);
    let state = if one_block {
        first.0
    } else {
        let (abcd, e) = first;
        let zero = _mm_setzero_si128();
        let w4 = chunk_word(zero, value, short, tail, lanes, 0, 4);
        let w5 = chunk_word(zero, value, short, tail, lanes, 0, 5);
        let w6 = chunk_word(zero, value, short, tail, lanes, 0, 6);
        let w7 = _mm_or_si128(chunk_word(zero, value, short, tail, lanes, 0, 7), bits);
        compress(abcd, e, abcd, abcd, 0, [w4, w5, w6, w7]).0
    };
    // A and B are the two highest lanes: (A << 32 | B) >> 4 is A's 32 bits and B's top 28.
    (_mm_extract_epi64::<1>(state) as u64) >> 4
}

/// [`word`] for a value of any length; only the template when the chunk's rounds are among the
/// `done` groups (the chunk then holds only prefix bytes).
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
#[inline]
fn chunk_word(
    template: __m128i,
    value: &[u8],
    short: __m128i,
    tail: usize,
    lanes: __m128i,
    done: usize,
    chunk: usize,
) -> __m128i {
    if chunk < done {
        template
    } else if value.len() < 16 {
        word::<true>(template, value, short, tail, lanes, chunk)
    } else {
        word::<false>(template, value, short, tail, lanes, chunk)
    }
}
