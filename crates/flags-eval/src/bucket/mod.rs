//! Percentage bucketing, exactly as LaunchDarkly computes it: the SHA-1 of
//! `"{key}.{salt}.{value}"` (or `"{seed}.{value}"`), its first 15 hex digits as an integer,
//! divided by `0xFFFFFFFFFFFFFFF`, all in `f32`.
//!
//! The constant start of the message (`"{key}.{salt}."` or `"{seed}."`) is laid out once per
//! rollout or segment rule ([`BucketPrefix`]): the SHA-1 state after its whole 64-byte blocks,
//! and its last partial block. Evaluating adds the value and its padding and runs one SHA-1
//! compression (two for long messages). On x86-64 CPUs with the SHA extensions the block is
//! assembled in vector registers and compressed with those instructions (`sha_ni`); elsewhere
//! it is copied on the stack for the `sha1` crate's compression function. Integers are formatted
//! on the stack, so bucketing does not allocate.

#[cfg(target_arch = "x86_64")]
mod sha_ni;

use flags_core::{AttrRef, SingleContext, Value};
use sha1::digest::generic_array::GenericArray;
use sha1::{Digest, Sha1};

/// `0xFFFFFFFFFFFFFFF` as LaunchDarkly's SDKs hold it: an `f32`.
const LONG_SCALE: f32 = 0xFFF_FFFF_FFFF_FFFF_u64 as f32;

/// The bucket (in `[0, 1)`) of `value` for a flag or segment `key` with `salt`, or with `seed`
/// in place of key and salt when given.
pub fn bucket(key: &str, salt: &str, seed: Option<i64>, value: &str) -> f32 {
    let mut seed_buf = itoa::Buffer::new();
    let parts: [&[u8]; 5] = match seed {
        Some(seed) => [
            seed_buf.format(seed).as_bytes(),
            b".",
            value.as_bytes(),
            b"",
            b"",
        ],
        None => [
            key.as_bytes(),
            b".",
            salt.as_bytes(),
            b".",
            value.as_bytes(),
        ],
    };
    to_bucket(sha1_prefix60(&parts))
}

/// The constant start of a bucketing message, prepared when a flag or segment is compiled.
#[derive(Debug, Clone)]
pub(crate) struct BucketPrefix {
    /// `"{key}.{salt}."` or `"{seed}."`.
    bytes: Box<[u8]>,
    /// The prefix laid out for hashing; boxed, as it is large and rollouts are kept small.
    prepared: Box<Prepared>,
}

/// A prefix laid out for the fastest way this CPU has to hash it.
#[derive(Debug, Clone)]
enum Prepared {
    /// In registers, for the x86 SHA extensions.
    #[cfg(target_arch = "x86_64")]
    ShaNi(sha_ni::Template),
    /// In memory, for the `sha1` crate's compression function.
    Portable(Portable),
}

impl BucketPrefix {
    /// The prefix for a flag or segment `key` and `salt`, or for `seed` when given.
    pub fn new(key: &str, salt: &str, seed: Option<i64>) -> BucketPrefix {
        BucketPrefix::from_bytes(match seed {
            Some(seed) => format!("{seed}.").into_bytes().into(),
            None => format!("{key}.{salt}.").into_bytes().into(),
        })
    }

    /// The prefix with these bytes.
    fn from_bytes(bytes: Box<[u8]>) -> BucketPrefix {
        let portable = Portable::new(&bytes);
        #[cfg(target_arch = "x86_64")]
        let prepared = match portable.sha_ni(bytes.len()) {
            Some(template) => Prepared::ShaNi(template),
            None => Prepared::Portable(portable),
        };
        #[cfg(not(target_arch = "x86_64"))]
        let prepared = Prepared::Portable(portable);
        BucketPrefix {
            bytes,
            prepared: Box::new(prepared),
        }
    }

    /// The bucket (in `[0, 1)`) of `value`: the same number as [`bucket`] gives.
    #[cfg(test)]
    pub fn bucket(&self, value: &str) -> f32 {
        to_bucket(self.hash(value))
    }

    /// The first 60 bits of the SHA-1 of the prefix followed by `value`; [`to_bucket`] makes
    /// that the bucket.
    #[inline]
    pub fn hash(&self, value: &str) -> u64 {
        self.hash_bytes(value.as_bytes())
    }

    /// [`BucketPrefix::hash`] for any bytes.
    #[inline]
    fn hash_bytes(&self, value: &[u8]) -> u64 {
        match &*self.prepared {
            #[cfg(target_arch = "x86_64")]
            Prepared::ShaNi(template) => template
                .hash(value)
                .unwrap_or_else(|| streaming_prefix60(&[&self.bytes, value])),
            Prepared::Portable(portable) => portable.hash(&self.bytes, value),
        }
    }
}

/// A prefix laid out in memory for the `sha1` crate's compression function.
#[derive(Debug, Clone)]
struct Portable {
    /// The SHA-1 state after the prefix's whole 64-byte blocks (a midstate), so that a long
    /// key and salt cost no extra compression per evaluation.
    state: [u32; 5],
    /// The length of the prefix's last partial block: its length modulo 64.
    tail: usize,
    /// That partial block followed by zeros: the next message block, ready for the value.
    block: [u8; 64],
}

impl Portable {
    /// The layout of the prefix `bytes`.
    fn new(bytes: &[u8]) -> Portable {
        let (whole, rest) = bytes.as_chunks::<64>();
        let mut state = SHA1_INIT;
        for b in whole {
            sha1::compress(
                &mut state,
                std::slice::from_ref(GenericArray::from_slice(b)),
            );
        }
        let mut block = [0u8; 64];
        block[..rest.len()].copy_from_slice(rest);
        Portable {
            state,
            tail: rest.len(),
            block,
        }
    }

    /// The same prefix (`len` bytes in all) prepared for the SHA extensions, when this CPU has
    /// them.
    #[cfg(target_arch = "x86_64")]
    fn sha_ni(&self, len: usize) -> Option<sha_ni::Template> {
        sha_ni::Template::new(self.state, &self.block, self.tail, len as u64)
    }

    /// [`BucketPrefix::hash`] of `value` for the prefix `bytes`: the message is laid out in one
    /// or two blocks on the stack, or hashed by the streaming hasher when longer.
    fn hash(&self, bytes: &[u8], value: &[u8]) -> u64 {
        let prefix = self.tail;
        let len = prefix + value.len();
        let bits = ((bytes.len() + value.len()) as u64) * 8;
        if len <= ONE_BLOCK {
            // The message, its 0x80 terminator and its bit length fit one block.
            let mut block = self.block;
            copy_short(&mut block[prefix..len], value);
            block[len] = 0x80;
            block[56..].copy_from_slice(&bits.to_be_bytes());
            let mut state = self.state;
            sha1::compress(
                &mut state,
                std::slice::from_ref(GenericArray::from_slice(&block)),
            );
            prefix60(state)
        } else if len <= TWO_BLOCKS {
            padded_prefix60(self.state, bits, &[&self.block[..prefix], value])
        } else {
            streaming_prefix60(&[bytes, value])
        }
    }
}

/// Copies `src` into `dst` (of the same length) with at most four loads and stores for up to 16
/// bytes, overlapping from both ends, rather than a call to `memcpy`: bucketed values are
/// mostly short keys.
#[inline(always)]
fn copy_short(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    match n {
        0 => {}
        1..=3 => {
            dst[0] = src[0];
            dst[n / 2] = src[n / 2];
            dst[n - 1] = src[n - 1];
        }
        4..=7 => {
            dst[..4].copy_from_slice(&src[..4]);
            dst[n - 4..].copy_from_slice(&src[n - 4..]);
        }
        8..=16 => {
            dst[..8].copy_from_slice(&src[..8]);
            dst[n - 8..].copy_from_slice(&src[n - 8..]);
        }
        _ => dst.copy_from_slice(src),
    }
}

/// The bucket (in `[0, 1)`) for the first 60 bits of a bucketing hash, in `f32` as LaunchDarkly
/// computes it.
#[inline]
pub(crate) fn to_bucket(hash: u64) -> f32 {
    hash as f32 / LONG_SCALE
}

/// The number of 60-bit hashes whose bucket is below `limit`: a hash `h` is in a bucket below
/// `limit` exactly when `h < below(limit)`.
///
/// [`to_bucket`] never decreases as the hash grows (converting to `f32` and dividing by a
/// positive constant both round monotonically), so the hashes below any limit are the ones
/// under some bound, found here by bisection when a rollout or segment rule is compiled.
/// Evaluation then compares integers, and gets exactly the answer the `f32` comparison
/// `to_bucket(h) < limit` gives.
pub(crate) fn below(limit: f32) -> u64 {
    // Invariant: to_bucket(h) < limit for every h < lo, and not for h >= hi.
    let (mut lo, mut hi) = (0u64, 1u64 << 60);
    if to_bucket(hi - 1) < limit {
        return hi;
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if to_bucket(mid) < limit {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The longest message that SHA-1 pads into a single 64-byte block.
const ONE_BLOCK: usize = 55;

/// The longest message that SHA-1 pads into two blocks.
const TWO_BLOCKS: usize = 119;

/// SHA-1 initial state (FIPS 180-4).
const SHA1_INIT: [u32; 5] = [
    0x6745_2301,
    0xEFCD_AB89,
    0x98BA_DCFE,
    0x1032_5476,
    0xC3D2_E1F0,
];

/// The first 60 bits (15 hex digits) of the SHA-1 of the concatenated parts.
///
/// Bucketing hashes short messages, so the message is padded into one or two blocks on the stack
/// and compressed directly; longer messages go through the streaming hasher.
fn sha1_prefix60(parts: &[&[u8]]) -> u64 {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len <= TWO_BLOCKS {
        padded_prefix60(SHA1_INIT, (len as u64) * 8, parts)
    } else {
        streaming_prefix60(parts)
    }
}

/// The first 60 bits of the SHA-1 of a message whose whole blocks so far left `state` and whose
/// rest is the concatenated parts (at most [`TWO_BLOCKS`] bytes), `bits` long in all: the rest
/// is padded into one or two blocks on the stack and compressed.
fn padded_prefix60(mut state: [u32; 5], bits: u64, parts: &[&[u8]]) -> u64 {
    let mut buf = [0u8; 128];
    let mut at = 0;
    for p in parts {
        buf[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    buf[at] = 0x80;
    let end = if at > ONE_BLOCK { 128 } else { 64 };
    buf[end - 8..end].copy_from_slice(&bits.to_be_bytes());
    for block in buf[..end].chunks_exact(64) {
        sha1::compress(
            &mut state,
            std::slice::from_ref(GenericArray::from_slice(block)),
        );
    }
    prefix60(state)
}

/// The first 60 bits of the SHA-1 of the concatenated parts, by the streaming hasher.
fn streaming_prefix60(parts: &[&[u8]]) -> u64 {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    let d = h.finalize();
    let mut state = [0u32; 5];
    for (i, w) in state.iter_mut().take(2).enumerate() {
        *w = u32::from_be_bytes([d[4 * i], d[4 * i + 1], d[4 * i + 2], d[4 * i + 3]]);
    }
    prefix60(state)
}

/// The first 60 bits of a SHA-1 digest, from its first two state words.
fn prefix60(state: [u32; 5]) -> u64 {
    (u64::from(state[0]) << 28) | u64::from(state[1] >> 4)
}

/// The bucketing hash of an attribute value: strings as they are, integers (including floats
/// with no fractional part) in decimal; anything else is hash 0, which is bucket 0.
#[inline(always)]
fn hash_value(prefix: &BucketPrefix, value: &Value) -> u64 {
    match value {
        Value::String(s) => prefix.hash(s),
        Value::Number(n) => hash_number(prefix, n),
        _ => 0,
    }
}

fn hash_number(prefix: &BucketPrefix, n: &serde_json::Number) -> u64 {
    let mut buf = itoa::Buffer::new();
    if let Some(i) = n.as_i64() {
        prefix.hash(buf.format(i))
    } else if let Some(u) = n.as_u64() {
        prefix.hash(buf.format(u))
    } else {
        match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 => {
                prefix.hash(buf.format(f as i64))
            }
            _ => 0,
        }
    }
}

/// The bucketing hash of a context for a rollout or a segment rule's weight (compare it with
/// bounds from [`below`]), given the context's part of the rollout's kind (`None`: the context
/// lacks the kind): `(hash, whether the context has the kind)`. A context without the kind or
/// the attribute has hash 0, bucket 0. `by_key` says that `attr` is the context key, which is
/// always a string and is read without an attribute lookup.
#[inline(always)]
pub(crate) fn hash_context(
    single: Option<&SingleContext>,
    attr: &AttrRef,
    by_key: bool,
    prefix: &BucketPrefix,
) -> (u64, bool) {
    let Some(single) = single else {
        return (0, false);
    };
    if by_key {
        return (prefix.hash(single.key()), true);
    }
    match single.get(attr) {
        Some(v) => (hash_value(prefix, v), true),
        None => (0, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(seed: Option<i64>, value: &str, expected: f32) {
        let got = bucket("hashKey", "saltyA", seed, value);
        assert!(
            (f64::from(got) - f64::from(expected)).abs() < 1e-7,
            "bucket of {value} with seed {seed:?}: got {got}, want {expected}"
        );
    }

    #[test]
    fn launchdarkly_bucketing_vectors() {
        check(None, "userKeyA", 0.421_575_87);
        check(None, "userKeyB", 0.670_848_5);
        check(None, "userKeyC", 0.103_431_06);
        check(Some(61), "userKeyA", 0.098_012_07);
        check(Some(61), "userKeyB", 0.144_837_77);
        check(Some(61), "userKeyC", 0.924_264_1);
    }

    #[test]
    fn prepared_prefixes_bucket_exactly_like_the_plain_function() {
        // Every split of the message between prefix and value around the one-block (55 bytes)
        // and two-block (119 bytes) limits, with a prefix that itself fills a block or more.
        for key_len in [0usize, 1, 7, 30, 53, 54, 55, 60, 64, 70, 130] {
            let key = "k".repeat(key_len);
            for value_len in [
                0usize, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 20, 40, 46, 47, 48, 53, 54, 55, 56, 64,
                110, 200,
            ] {
                let value = "v".repeat(value_len);
                for (salt, seed) in [
                    ("salt", None),
                    ("", None),
                    ("s", Some(-61)),
                    ("s", Some(i64::MAX)),
                ] {
                    let want = bucket(&key, salt, seed, &value);
                    let got = BucketPrefix::new(&key, salt, seed).bucket(&value);
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "key {key_len} salt {salt:?} seed {seed:?} value {value_len}"
                    );
                }
            }
        }
    }

    #[test]
    fn long_messages_hash_like_short_ones() {
        // 55/56 and 119/120 bytes are where the message stops fitting one, then two, blocks.
        for len in [
            0usize, 1, 40, 54, 55, 56, 57, 63, 64, 100, 118, 119, 120, 121, 200, 500,
        ] {
            let value = "v".repeat(len);
            let mut h = Sha1::new();
            h.update(format!("k.s.{value}").as_bytes());
            let d = h.finalize();
            let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
            let want = u64::from_str_radix(&hex[..15], 16).unwrap();
            assert_eq!(
                sha1_prefix60(&[b"k", b".", b"s", b".", value.as_bytes()]),
                want,
                "length {len}"
            );
        }
    }

    /// The first 60 bits of the SHA-1 of `message`, by the streaming hasher alone.
    fn digest60(message: &[u8]) -> u64 {
        let d = Sha1::digest(message);
        let mut first = [0u8; 8];
        first.copy_from_slice(&d[..8]);
        u64::from_be_bytes(first) >> 4
    }

    /// Deterministic pseudo-random bytes (SplitMix64), every byte value included.
    fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                (z ^ (z >> 31)) as u8
            })
            .collect()
    }

    #[test]
    fn every_split_of_prefix_and_value_hashes_like_sha1() {
        // Every prefix length across one block and a bit (so a midstate and a partial block),
        // and every value length past two blocks, through each path separately.
        for prefix_len in 0..=70usize {
            let prefix_bytes = random_bytes(prefix_len as u64, prefix_len);
            let prefix = BucketPrefix::from_bytes(prefix_bytes.clone().into());
            let portable = Portable::new(&prefix_bytes);
            #[cfg(target_arch = "x86_64")]
            let template = portable.sha_ni(prefix_len);
            for value_len in 0..=130usize {
                let value = random_bytes(1000 + (prefix_len * 131 + value_len) as u64, value_len);
                let want = digest60(&[prefix_bytes.as_slice(), &value].concat());
                let at = format!("prefix {prefix_len} value {value_len}");
                assert_eq!(prefix.hash_bytes(&value), want, "{at}");
                assert_eq!(portable.hash(&prefix_bytes, &value), want, "portable, {at}");
                #[cfg(target_arch = "x86_64")]
                if let Some(template) = &template {
                    let fits = prefix_len % 64 + value_len <= TWO_BLOCKS;
                    assert_eq!(template.hash(&value), fits.then_some(want), "SHA-NI, {at}");
                }
            }
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_sha_extensions_are_used_where_the_cpu_has_them() {
        let has = std::is_x86_feature_detected!("sha")
            && std::is_x86_feature_detected!("sse2")
            && std::is_x86_feature_detected!("ssse3")
            && std::is_x86_feature_detected!("sse4.1");
        let prefix = BucketPrefix::new("k", "s", None);
        assert_eq!(matches!(*prefix.prepared, Prepared::ShaNi(_)), has);
        if !has {
            eprintln!("this CPU lacks the SHA extensions: only the portable path was tested");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2000,
            ..proptest::prelude::ProptestConfig::default()
        })]

        #[test]
        fn prepared_prefixes_hash_like_sha1(
            key in ".{0,70}",
            salt in ".{0,40}",
            seed in proptest::option::of(proptest::num::i64::ANY),
            value in ".{0,60}",
        ) {
            let message = match seed {
                Some(seed) => format!("{seed}.{value}"),
                None => format!("{key}.{salt}.{value}"),
            };
            let want = digest60(message.as_bytes());
            let prefix = BucketPrefix::new(&key, &salt, seed);
            proptest::prop_assert_eq!(prefix.hash(&value), want);
            let portable = Portable::new(&prefix.bytes);
            proptest::prop_assert_eq!(portable.hash(&prefix.bytes, value.as_bytes()), want);
            proptest::prop_assert_eq!(bucket(&key, &salt, seed, &value), to_bucket(want));
        }
    }

    #[test]
    fn integers_bucket_like_their_decimal_strings() {
        let s = bucket("hashKey", "saltyA", None, "33333");
        let prefix = BucketPrefix::new("hashKey", "saltyA", None);
        let bucket_value = |v: Value| to_bucket(hash_value(&prefix, &v));
        assert_eq!(bucket_value(serde_json::json!(33333)), s);
        assert_eq!(bucket_value(serde_json::json!(33333.0)), s);
        assert_eq!(bucket_value(serde_json::json!(33333.5)), 0.0);
        assert_eq!(bucket_value(serde_json::json!(true)), 0.0);
        let neg = bucket("hashKey", "saltyA", Some(-7), "x");
        assert!(neg > 0.0 && neg < 1.0);
    }

    #[test]
    fn integer_bounds_agree_with_the_f32_comparison() {
        // Limits as rollouts and segment weights produce them, and awkward ones.
        let mut limits: Vec<f32> = vec![0.0, -0.0, 1.0, 0.5, f32::MIN_POSITIVE, f32::NAN, 2.0];
        let mut sum = 0f32;
        for w in [33333, 33333, 33334, 1, 99_999, 12_345, 50_000, 0, 100_000] {
            sum += w as f32 / 100_000.0;
            limits.push(sum);
            limits.push(w as f32 / 100_000.0);
        }
        let max = (1u64 << 60) - 1;
        for limit in limits {
            let b = below(limit);
            // Around the bound, and at the ends of the range.
            let near = [b.saturating_sub(2), b.saturating_sub(1), b, b + 1, b + 2];
            for h in near
                .into_iter()
                .chain([0, 1, max / 3, max / 2, max - 1, max])
            {
                if h > max {
                    continue;
                }
                assert_eq!(h < b, to_bucket(h) < limit, "hash {h} limit {limit}");
            }
        }
        // A sweep of hashes against a three-way split.
        let bounds = [0.33333f32, 0.66666, 1.0].map(below);
        let mut h = 0u64;
        while h <= max {
            for (limit, b) in [0.33333f32, 0.66666, 1.0].into_iter().zip(bounds) {
                assert_eq!(h < b, to_bucket(h) < limit, "hash {h} limit {limit}");
            }
            h += 0x0000_1234_5678_9abc;
        }
    }
}
