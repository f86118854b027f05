//! The usual evaluation request body read without serde: `{"context": {...}}` whose context
//! holds strings, integers, booleans, nulls and flat arrays of those, written without escapes.
//! Walking such a body through serde's visitors (the body's, [`MaybeObject`]'s and
//! [`Members`]'s, and a `Value` for every member) costs over a third more than scanning its
//! bytes once and making the same values, whose allocations are most of what is left.
//!
//! Only that subset is read; anything else, valid JSON or not, is `None`, and
//! `ContextBody::parse` reads it with `serde_json` as before, so every other value and every
//! error stay exactly what they were. What is read is the value the `serde_json` path gives: the
//! same `Value`s, names made by [`Name::member`], and members collected by
//! [`Members::from_pairs`]. Numbers with a fraction or an exponent, integers past 18 digits
//! and `-0` are left to `serde_json`, which alone decides how to represent them; so are escapes
//! and raw control characters, whose decoding and errors are its own.

use std::cell::RefCell;

use flags_core::Context;
use flags_core::context::{Members, Name};
use serde_json::Value;

/// The most digits an integer read here may have: any such integer fits an `i64` either way.
const MAX_DIGITS: usize = 18;

/// The members a context is given room for before it grows; the usual context has fewer, and
/// it is what the `serde_json` path reserves.
const MEMBERS: usize = 8;

/// The context's members, when `text` is `{"context": {...}}` within the subset; `None`
/// otherwise. Its strings are made from this thread's [`Spare`] buffers.
pub(super) fn context_members(text: &str) -> Option<Members> {
    with_spare(|spare| read_body(text, spare))
}

fn read_body(text: &str, spare: &mut Spare) -> Option<Members> {
    let mut scan = Scanner {
        text,
        pos: 0,
        spare,
    };
    scan.expect(b'{')?;
    if scan.string()? != "context" {
        return None;
    }
    scan.expect(b':')?;
    scan.expect(b'{')?;
    let members = scan.members()?;
    // `context` must be the only member: any other is left to `serde_json`.
    scan.expect(b'}')?;
    scan.skip_ws();
    (scan.pos == text.len()).then_some(members)
}

/// A position in the body being read. Every step reads bytes with `get`, so a body that ends
/// early is `None`, never a panic.
struct Scanner<'a, 's> {
    text: &'a str,
    pos: usize,
    /// Where string values take their buffers from.
    spare: &'s mut Spare,
}

impl<'a> Scanner<'a, '_> {
    /// The byte at the position, not consumed.
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    /// Skips JSON's whitespace (and only it).
    #[inline]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// The next byte after whitespace, consumed.
    #[inline]
    fn next_token(&mut self) -> Option<u8> {
        self.skip_ws();
        let byte = self.peek()?;
        self.pos += 1;
        Some(byte)
    }

    /// Consumes `byte`, after whitespace.
    #[inline]
    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next_token()? == byte).then_some(())
    }

    /// A string, after whitespace.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        self.string_rest()
    }

    /// The rest of a string whose opening quote is consumed, up to and past its closing quote.
    /// A backslash or a control character is `None`: their decoding and their errors belong to
    /// `serde_json`.
    #[inline]
    fn string_rest(&mut self) -> Option<&'a str> {
        let start = self.pos;
        let rest = self.text.as_bytes().get(start..)?;
        let len = plain_len(rest);
        if rest.get(len) != Some(&b'"') {
            return None;
        }
        self.pos = start + len + 1;
        // Quotes are ASCII, so the slice is on character boundaries.
        self.text.get(start..start + len)
    }

    /// The members of an object whose `{` is consumed, up to and past its `}`.
    fn members(&mut self) -> Option<Members> {
        match self.next_token()? {
            b'}' => return Some(Members::default()),
            b'"' => {}
            _ => return None,
        }
        let mut pairs = Vec::with_capacity(MEMBERS);
        loop {
            let name = self.string_rest()?;
            self.expect(b':')?;
            let value = match self.next_token()? {
                b'[' => self.array()?,
                first => self.scalar(first)?,
            };
            pairs.push((Name::member(name), value));
            match self.next_token()? {
                b',' => self.expect(b'"')?,
                // Sorted, and of a repeated name the last kept, as `serde_json` keeps them.
                b'}' => return Some(Members::from_pairs(pairs)),
                _ => return None,
            }
        }
    }

    /// An array of scalars whose `[` is consumed, up to and past its `]`.
    fn array(&mut self) -> Option<Value> {
        let mut items = Vec::new();
        let mut first = self.next_token()?;
        if first == b']' {
            return Some(Value::Array(items));
        }
        loop {
            items.push(self.scalar(first)?);
            match self.next_token()? {
                b',' => first = self.next_token()?,
                b']' => return Some(Value::Array(items)),
                _ => return None,
            }
        }
    }

    /// A string, integer, `true`, `false` or `null` whose first byte, `first`, is consumed.
    fn scalar(&mut self, first: u8) -> Option<Value> {
        match first {
            b'"' => {
                let text = self.string_rest()?;
                Some(Value::String(self.spare.string(text)))
            }
            b't' => self.literal(b"rue", Value::Bool(true)),
            b'f' => self.literal(b"alse", Value::Bool(false)),
            b'n' => self.literal(b"ull", Value::Null),
            b'-' => {
                // No whitespace between the sign and the digits.
                let digit = self.peek()?;
                self.pos += 1;
                match self.integer(digit)? {
                    // `serde_json` reads `-0` as the float -0.0.
                    0 => None,
                    n => i64::try_from(n).ok()?.checked_neg().map(Value::from),
                }
            }
            _ => self.integer(first).map(Value::from),
        }
    }

    /// The rest of a literal whose first byte is consumed.
    #[inline]
    fn literal(&mut self, rest: &[u8], value: Value) -> Option<Value> {
        let end = self.pos + rest.len();
        if self.text.as_bytes().get(self.pos..end)? != rest {
            return None;
        }
        self.pos = end;
        Some(value)
    }

    /// The magnitude of an integer whose first digit, `first`, is consumed: at most
    /// [`MAX_DIGITS`] digits, and not followed by a fraction or an exponent. A leading zero
    /// followed by more digits ends the integer at the zero, and what follows is then no
    /// separator, so the body is `None`.
    fn integer(&mut self, first: u8) -> Option<u64> {
        let mut n = u64::from(first.checked_sub(b'0').filter(|d| *d <= 9)?);
        if n != 0 {
            let mut digits = 1;
            while let Some(d @ b'0'..=b'9') = self.peek() {
                if digits == MAX_DIGITS {
                    return None;
                }
                n = n * 10 + u64::from(d - b'0');
                digits += 1;
                self.pos += 1;
            }
        }
        match self.peek() {
            Some(b'.' | b'e' | b'E') => None,
            _ => Some(n),
        }
    }
}

/// String buffers of the contexts this thread has finished with, for the next contexts it
/// reads: taking a string from here and giving it back costs a fraction of allocating and
/// freeing it, and allocation was a fifth of a single-flag request's instructions, most of it
/// for the context's strings. Bounded in count and size, so a thread keeps a few kilobytes.
#[derive(Default)]
pub(super) struct Spare {
    strings: Vec<String>,
}

thread_local! {
    static SPARE: RefCell<Spare> = const { RefCell::new(Spare { strings: Vec::new() }) };
}

/// Runs `f` with this thread's spare buffers, taken out for the while (so a nested call finds
/// none), or with none during the thread's teardown; either way `f` gets a `Spare`.
fn with_spare<T>(f: impl FnOnce(&mut Spare) -> T) -> T {
    let mut spare = SPARE
        .try_with(|cell| {
            cell.try_borrow_mut()
                .map(|mut kept| std::mem::take(&mut *kept))
        })
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let done = f(&mut spare);
    // Put back; if the thread is being torn down, the buffers are simply freed.
    let _ = SPARE.try_with(|cell| {
        if let Ok(mut kept) = cell.try_borrow_mut() {
            *kept = spare;
        }
    });
    done
}

impl Spare {
    /// The most buffers a thread keeps.
    const KEPT: usize = 64;
    /// Buffers are made at least this large (the C allocator's smallest block holds 24 bytes
    /// anyway), so that any short string fits any kept buffer.
    const MIN_CAPACITY: usize = 24;
    /// Larger buffers are freed rather than kept.
    const MAX_CAPACITY: usize = 256;

    /// `text` as a `String`, in a kept buffer when there is one.
    #[inline]
    fn string(&mut self, text: &str) -> String {
        let mut string = self
            .strings
            .pop()
            .unwrap_or_else(|| String::with_capacity(text.len().max(Self::MIN_CAPACITY)));
        string.clear();
        string.push_str(text);
        string
    }

    /// Keeps `string`'s buffer for a later [`Spare::string`], or frees it.
    #[inline]
    fn keep(&mut self, string: String) {
        if self.strings.len() < Self::KEPT
            && (Self::MIN_CAPACITY..=Self::MAX_CAPACITY).contains(&string.capacity())
        {
            self.strings.push(string);
        }
    }
}

/// A context being evaluated. When it is dropped, whatever path the handler took, its strings
/// go to this thread's spare buffers, from which the scanner makes the next context's.
pub(super) struct Recycled(Context);

impl Recycled {
    /// Guards `context`.
    pub(super) fn new(context: Context) -> Recycled {
        Recycled(context)
    }
}

impl std::ops::Deref for Recycled {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.0
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let context = &mut self.0;
        with_spare(|spare| context.take_strings(&mut |string| spare.keep(string)));
    }
}

/// `text` as a `String` made from this thread's spare buffers.
pub(super) fn spare_string(text: &str) -> String {
    with_spare(|spare| spare.string(text))
}

/// The number of bytes at the start of `bytes` before the first quote, backslash or control
/// character (all of `bytes` when there is none). Eight bytes are tested at a time: strings are
/// most of a body, and testing them byte by byte cost more than all the rest of the scan.
#[inline]
fn plain_len(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut len = 0;
    while let Some(chunk) = bytes.get(len..).and_then(<[u8]>::first_chunk::<8>) {
        let word = u64::from_le_bytes(*chunk);
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        // `(x - ONES) & !x & HIGH` marks the bytes of `x` below one, `(x - n * ONES) & !x & HIGH`
        // those below `n`. A borrow can mark a byte after one truly marked, never before it, so
        // the first mark is exact.
        let marks = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (word.wrapping_sub(ONES * 0x20) & !word))
            & HIGH;
        if marks != 0 {
            // Little-endian: the lowest mark is the first byte.
            return len + (marks.trailing_zeros() / 8) as usize;
        }
        len += 8;
    }
    let tail = bytes.get(len..).unwrap_or_default();
    len + tail
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(tail.len())
}

#[cfg(test)]
mod tests {
    use flags_core::context::MaybeObject;

    use super::super::body::ContextBody;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn spare_buffers_are_reused_and_bounded() {
        let mut spare = Spare::default();
        let first = spare.string("abc");
        assert_eq!(first, "abc");
        assert!(first.capacity() >= Spare::MIN_CAPACITY);
        spare.keep(first);
        let second = spare.string("a longer string, past 24 bytes");
        assert_eq!(second, "a longer string, past 24 bytes");
        let buffer = second.as_ptr();
        spare.keep(second);
        // Too small or too large to be worth keeping.
        spare.keep(String::new());
        spare.keep(String::with_capacity(Spare::MAX_CAPACITY + 1));
        assert_eq!(spare.strings.len(), 1);
        let third = spare.string("xyz");
        assert_eq!(third, "xyz");
        assert!(spare.strings.is_empty());
        assert_eq!(third.as_ptr(), buffer, "the kept buffer is reused");
        for _ in 0..2 * Spare::KEPT {
            spare.keep(String::with_capacity(Spare::MIN_CAPACITY));
        }
        assert_eq!(spare.strings.len(), Spare::KEPT);
    }

    #[test]
    fn recycled_contexts_lend_their_strings_to_the_next() {
        let body = r#"{"context":{"kind":"user","key":"user-1","plan":"pro"}}"#;
        let read = || match context_members(body)
            .map(|m| ContextBody::Object(Some(MaybeObject::Object(m))))
        {
            Some(ContextBody::Object(Some(MaybeObject::Object(members)))) => {
                Context::from_members(members).unwrap()
            }
            other => panic!("{other:?}"),
        };
        let strings = |context: &Context| {
            let single = &context.contexts()[0];
            [
                single.kind().as_ptr(),
                single.key().as_ptr(),
                single
                    .custom_attribute("plan")
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .as_ptr(),
            ]
        };
        let first = read();
        let before = strings(&first);
        drop(Recycled::new(first));
        let second = read();
        let mut after = strings(&second);
        let mut before = before;
        before.sort();
        after.sort();
        assert_eq!(
            before, after,
            "the second context is made of the first one's buffers"
        );
        assert_eq!(second, read_fresh(body));
    }

    /// The same body read by serde, with buffers of its own.
    fn read_fresh(body: &str) -> Context {
        match serde_json::from_str::<ContextBody>(body).unwrap() {
            ContextBody::Object(Some(MaybeObject::Object(members))) => {
                Context::from_members(members).unwrap()
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plain_runs_end_at_the_first_quote_backslash_or_control_character() {
        let naive = |bytes: &[u8]| {
            bytes
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(bytes.len())
        };
        let fillers = [
            b'a', b' ', b'!', b'#', b'[', b']', b'\x7f', 0x80, 0xc3, 0xff,
        ];
        let stops = [b'"', b'\\', 0, 0x1f, b'\n'];
        for len in 0..24 {
            for &filler in &fillers {
                let plain = vec![filler; len];
                assert_eq!(plain_len(&plain), len);
                for at in 0..len {
                    for &stop in &stops {
                        let mut bytes = plain.clone();
                        bytes[at] = stop;
                        // A second stop later does not move the first.
                        if let Some(later) = bytes.get_mut(at + 3) {
                            *later = b'"';
                        }
                        assert_eq!(plain_len(&bytes), naive(&bytes), "{bytes:?}");
                        assert_eq!(plain_len(&bytes), at, "{bytes:?}");
                    }
                }
            }
        }
    }

    /// What the `serde_json` path reads.
    fn serde(text: &str) -> Result<ContextBody, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The fast path's answer, checked against the `serde_json` path's whenever there is one.
    fn fast(text: &str) -> Option<ContextBody> {
        let fast = context_members(text).map(|m| ContextBody::Object(Some(MaybeObject::Object(m))));
        if let Some(body) = &fast {
            match serde(text) {
                Ok(expected) => assert_eq!(body, &expected, "{text:?}"),
                Err(e) => panic!("{text:?} read, but serde_json fails: {e}"),
            }
        }
        fast
    }

    fn body(context: &str) -> String {
        format!(r#"{{"context":{context}}}"#)
    }

    const BENCH: &str = r#"{"context":{"appVersion":"2.7.1","country":"DE","email":"user-4242@example.com","groups":["beta-6","staff"],"key":"user-4242","kind":"user","plan":"pro"}}"#;

    /// Bodies the fast path reads.
    fn accepted() -> Vec<String> {
        let mut texts: Vec<String> = [
            BENCH,
            r#"{"context":{"targetingKey":"user-1","email":"a@example.com","plan":"pro"}}"#,
            r#"{"context":{"targetingKey":"org-7","kind":"organization","name":"Acme"}}"#,
            r#"{"context":{}}"#,
            "{\"context\":{ \t\r\n}}",
            " \t\r\n{ \n\"context\" \t: \r{ \"a\" : [ 1 , \"x\" , true , false , null ] , \
             \"b\" : -5 ,\"c\":[ ] } \n} \t\r\n",
            r#"{"context":{"key":"a","kind":"user","key":"b","key":"c"}}"#,
            r#"{"context":{"z":1,"a":2,"m":3,"a":4,"b":null}}"#,
            r#"{"context":{"kind":"user","key":"k","name":"n","_meta":null,"custom":"c","anonymous":true,"targetingKey":"t","privateAttributeNames":["email"]}}"#,
            r#"{"context":{"kine":1,"namf":2,"_metb":3,"anonymouz":4,"targetingKez":5,"privateAttributeNamez":6}}"#,
            r#"{"context":{"abc":1,"abcd":2,"abcdefghijklmnopqrstuv":3,"abcdefghijklmnopqrstuvw":4,"an attribute name much longer than twenty-two bytes":5}}"#,
            r#"{"context":{"":"","k":""}}"#,
            r#"{"context":{"ünïcødé":"日本語 🎌","ü€":"a/b"}}"#,
            "{\"context\":{\"del\":\"\u{7f}\",\"nbsp\":\"\u{a0}\"}}",
            r#"{"context":{"a":0,"b":7,"c":-7,"d":999999999999999999,"e":-999999999999999999,"f":100000000000000000,"g":-100000000000000000}}"#,
            r#"{"context":{"a":[],"b":["a",1,-2,true,false,null],"c":[0]}}"#,
            r#"{"context":{"a":true,"b":false,"c":null}}"#,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        texts.push(body(&format!(r#"{{"key":"{}"}}"#, "x".repeat(5000))));
        texts.push(body(&format!(r#"{{"{}":1}}"#, "ü".repeat(300))));
        let many: Vec<String> = (0..40).map(|i| format!(r#""attr{i}":{i}"#)).collect();
        texts.push(body(&format!("{{{}}}", many.join(","))));
        texts
    }

    /// Bodies the fast path leaves to `serde_json`, valid JSON or not.
    fn declined() -> Vec<String> {
        let mut texts: Vec<String> = [
            // Numbers only `serde_json` represents.
            r#"{"context":{"a":1000000000000000000}}"#,
            r#"{"context":{"a":-1000000000000000000}}"#,
            r#"{"context":{"a":18446744073709551615}}"#,
            r#"{"context":{"a":18446744073709551616}}"#,
            r#"{"context":{"a":-0}}"#,
            r#"{"context":{"a":[-0]}}"#,
            r#"{"context":{"a":-0.0}}"#,
            r#"{"context":{"a":0.5}}"#,
            r#"{"context":{"a":1e3}}"#,
            r#"{"context":{"a":1E3}}"#,
            r#"{"context":{"a":0e1}}"#,
            r#"{"context":{"a":[1.5]}}"#,
            // Not numbers.
            r#"{"context":{"a":1.}}"#,
            r#"{"context":{"a":-}}"#,
            r#"{"context":{"a":- 1}}"#,
            r#"{"context":{"a":-a}}"#,
            r#"{"context":{"a":01}}"#,
            r#"{"context":{"a":-01}}"#,
            r#"{"context":{"a":+1}}"#,
            r#"{"context":{"a":.5}}"#,
            r#"{"context":{"a":1x}}"#,
            // Escapes and control characters.
            r#"{"context":{"a":"a\"b"}}"#,
            r#"{"context":{"a":"\u00e9"}}"#,
            r#"{"context":{"a":"\n"}}"#,
            r#"{"context":{"a":"\x"}}"#,
            r#"{"context":{"k\u0065y":"a"}}"#,
            r#"{"cont\u0065xt":{"key":"a"}}"#,
            r#"{"context":{"a":["\\"]}}"#,
            "{\"context\":{\"a\":\"a\tb\"}}",
            "{\"context\":{\"a\":\"\u{1}\"}}",
            "{\"context\":{\"a\u{1f}\":1}}",
            "{\"context\":{\"a\":\"\u{0}\"}}",
            // Nested values.
            r#"{"context":{"_meta":{"a":1}}}"#,
            r#"{"context":{"custom":{}}}"#,
            r#"{"context":{"a":[[1]]}}"#,
            r#"{"context":{"a":[[]]}}"#,
            r#"{"context":{"a":[{"b":1}]}}"#,
            // Literals.
            r#"{"context":{"a":tru}}"#,
            r#"{"context":{"a":truee}}"#,
            r#"{"context":{"a":nul}}"#,
            r#"{"context":{"a":True}}"#,
            r#"{"context":{"a":falsey}}"#,
            r#"{"context":{"a":[nulll]}}"#,
            // Punctuation.
            r#"{"context":{"a" 1}}"#,
            r#"{"context":{"a":1 "b":2}}"#,
            r#"{"context":{"a":1,}}"#,
            r#"{"context":{,"a":1}}"#,
            r#"{"context":{"a":[1,]}}"#,
            r#"{"context":{"a":[,]}}"#,
            r#"{"context":{"a":[1 2]}}"#,
            r#"{"context":{"a":[1}}"#,
            r#"{"context":{"a":1]}}"#,
            r#"{"context":{"a":}}"#,
            r#"{"context":{a:1}}"#,
            r#"{"context":{1:1}}"#,
            r#"{"context":{"a":'x'}}"#,
            r#"{"context" {}}"#,
            r#"{context:{}}"#,
            // Whitespace JSON does not have.
            "{\"context\":{\u{c}}}",
            "{\"context\":{\u{a0}}}",
            "\u{feff}{\"context\":{}}",
            // After the body.
            r#"{"context":{}}x"#,
            r#"{"context":{}} {}"#,
            r#"{"context":{}}}"#,
            r#"{"context":{}}]"#,
            // Other top-level members, or none.
            r#"{"context":{},"other":1}"#,
            r#"{"other":1,"context":{}}"#,
            r#"{"context":{"a":1},"context":{"b":2}}"#,
            r#"{"Context":{}}"#,
            r#"{"contexts":{}}"#,
            "{}",
            r#"{"other":{}}"#,
            // A context that is not an object.
            r#"{"context":null}"#,
            r#"{"context":[]}"#,
            r#"{"context":"x"}"#,
            r#"{"context":1}"#,
            r#"{"context":true}"#,
            // Not an object.
            "[]",
            r#""context""#,
            "null",
            "1",
            "",
            " ",
            "{",
            "}",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        // Every strict prefix of the usual body.
        texts.extend(
            (0..BENCH.len())
                .filter_map(|n| BENCH.get(..n))
                .map(str::to_owned),
        );
        texts
    }

    #[test]
    fn reads_what_serde_json_reads() {
        for text in accepted() {
            assert!(fast(&text).is_some(), "{text:?} is read");
        }
        for text in declined() {
            assert!(fast(&text).is_none(), "{text:?} is left to serde_json");
        }
    }

    /// The fuzz target's entry point finds no difference on any listed body, nor on bodies that
    /// are not UTF-8, and its route readers take them all.
    #[test]
    fn fuzz_entry_point_agrees_on_the_listed_bodies() {
        let mut bodies: Vec<Vec<u8>> = accepted()
            .into_iter()
            .chain(declined())
            .map(String::into_bytes)
            .collect();
        bodies.push(b"{\"context\":{\"key\":\"\xff\"}}".to_vec());
        bodies.push(b"\xef\xbb\xbf{}".to_vec());
        for body in bodies {
            let read = super::super::read_evaluation_body(&body);
            assert_eq!(read, Ok(()), "{:?}", String::from_utf8_lossy(&body));
        }
    }

    /// Contexts at and past flags-core's size limits, in bodies the fast path reads: both paths
    /// make the same context, or the same error naming the limit.
    #[test]
    fn contexts_past_the_size_limits_are_refused_whichever_path_reads_them() {
        let attributes = |n: usize| {
            let members: Vec<String> = (0..n).map(|i| format!(r#""a{i}":{i}"#)).collect();
            body(&format!(
                r#"{{"kind":"user","key":"u",{}}}"#,
                members.join(",")
            ))
        };
        // A list in a context of kind `user`, or (for the legacy format's own lists) of none.
        let list = |name: &str, item: &str, n: usize| {
            let kind = if name == "privateAttributeNames" {
                ""
            } else {
                r#""kind":"user","#
            };
            body(&format!(
                r#"{{{kind}"key":"u","{name}":[{}]}}"#,
                vec![item; n].join(",")
            ))
        };
        let too_long = |name: &str| {
            format!(
                "context attribute {name:?} contains an array of 10001 items, more than the limit of 10000"
            )
        };
        let cases = [
            (attributes(10_000), Ok(())),
            (
                attributes(10_001),
                Err("context has 10001 custom attributes, more than the limit of 10000".to_owned()),
            ),
            (list("groups", "1", 10_000), Ok(())),
            (list("groups", "1", 10_001), Err(too_long("groups"))),
            (list("privateAttributeNames", r#""email""#, 10_000), Ok(())),
            (
                list("privateAttributeNames", r#""email""#, 10_001),
                Err(too_long("privateAttributeNames")),
            ),
        ];
        for (text, expected) in cases {
            let Some(ContextBody::Object(Some(MaybeObject::Object(scanned)))) = fast(&text) else {
                panic!("the fast path reads {:.60}", text);
            };
            let Ok(ContextBody::Object(Some(MaybeObject::Object(parsed)))) = serde(&text) else {
                panic!("serde_json reads {:.60}", text);
            };
            let scanned = Context::from_members(scanned);
            assert_eq!(scanned, Context::from_members(parsed), "{:.60}", text);
            assert_eq!(
                scanned.map(|_| ()).map_err(|e| e.to_string()),
                expected,
                "{:.60}",
                text
            );
        }
    }

    #[test]
    fn reads_the_usual_body() {
        let Some(ContextBody::Object(Some(MaybeObject::Object(members)))) = fast(BENCH) else {
            panic!("the usual body is read");
        };
        let names: Vec<&str> = members.iter().map(|(k, _)| k).collect();
        assert_eq!(
            names,
            [
                "appVersion",
                "country",
                "email",
                "groups",
                "key",
                "kind",
                "plan"
            ]
        );
        assert_eq!(
            members.get("groups"),
            Some(&serde_json::json!(["beta-6", "staff"]))
        );
    }

    /// A JSON string of the subset: no quote, backslash or control character.
    fn plain_string() -> impl Strategy<Value = String> {
        prop::collection::vec(any::<char>(), 0..24).prop_map(|chars| {
            chars
                .into_iter()
                .filter(|c| !matches!(c, '"' | '\\' | '\0'..='\u{1f}'))
                .collect()
        })
    }

    /// A member name: a known name, a near miss, or any plain string.
    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "key",
                "kind",
                "name",
                "_meta",
                "custom",
                "anonymous",
                "targetingKey",
                "privateAttributeNames",
                "kine",
                "nam",
                "targetingkey",
                "abcdefghijklmnopqrstuv",
                "abcdefghijklmnopqrstuvw",
            ])
            .prop_map(str::to_owned),
            plain_string(),
        ]
    }

    /// A scalar of the subset, as JSON.
    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            plain_string().prop_map(|s| format!("\"{s}\"")),
            (-999_999_999_999_999_999i64..=999_999_999_999_999_999).prop_map(|n| n.to_string()),
            prop::sample::select(vec![
                "0",
                "-1",
                "999999999999999999",
                "-999999999999999999",
                "true",
                "false",
                "null",
            ])
            .prop_map(str::to_owned),
        ]
    }

    /// A value outside the subset, as JSON (valid or not): the fast path must decline it.
    fn outside() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "-0",
                "1.5",
                "-0.0",
                "1e5",
                "2E-3",
                "1000000000000000000",
                "-1000000000000000000",
                "18446744073709551616",
                "\"a\\nb\"",
                "\"\\u00e9\"",
                "\"\\\"\"",
                "\"a\u{1}\"",
                "{}",
                "{\"a\":1}",
                "[[1]]",
                "[{}]",
                "[1.0]",
                "01",
                "tru",
                "\"open",
            ])
            .prop_map(str::to_owned),
            any::<f64>().prop_map(|f| format!("{f:?}")),
        ]
    }

    /// A member value: a scalar or a flat array of the subset, or (when `outside` is true) a
    /// value outside it.
    fn value() -> impl Strategy<Value = (String, bool)> {
        prop_oneof![
            6 => scalar().prop_map(|v| (v, false)),
            2 => prop::collection::vec(scalar(), 0..5).prop_map(|vs| (format!("[{}]", vs.join(",")), false)),
            1 => outside().prop_map(|v| (v, true)),
            1 => (prop::collection::vec(scalar(), 0..3), outside())
                .prop_map(|(mut vs, o)| { vs.push(o); (format!("[{}]", vs.join(",")), true) }),
        ]
    }

    /// A body around generated members, with generated whitespace between its tokens; whether
    /// every value is in the subset.
    fn generated_body() -> impl Strategy<Value = (String, bool)> {
        let ws = prop::collection::vec(
            prop::sample::select(vec!["", "", "", " ", "\t", "\n", "\r", "  \r\n"]),
            1..16,
        );
        (prop::collection::vec((name(), value()), 0..12), ws).prop_map(|(members, ws)| {
            let mut gaps = ws.into_iter().cycle();
            let mut gap = move || gaps.next().unwrap_or_default();
            let mut text = format!("{}{{{}\"context\"{}:{}{{", gap(), gap(), gap(), gap());
            let mut inside = true;
            for (i, (name, (value, outside))) in members.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(&format!(
                    "{}\"{name}\"{}:{}{value}{}",
                    gap(),
                    gap(),
                    gap(),
                    gap()
                ));
                inside &= !outside;
            }
            text.push_str(&format!("{}}}{}}}{}", gap(), gap(), gap()));
            (text, inside)
        })
    }

    /// Changes to a body: a byte replaced, inserted or removed, or the body cut short.
    #[derive(Debug, Clone)]
    enum Mutation {
        Replace(usize, u8),
        Insert(usize, u8),
        Remove(usize),
        Truncate(usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        let byte = prop_oneof![
            prop::sample::select(b"\"\\{}[],:-+.eE019 \t\n\rtfnu\x00\x1f\x7f".to_vec()),
            any::<u8>(),
        ];
        prop_oneof![
            (any::<usize>(), byte.clone()).prop_map(|(i, b)| Mutation::Replace(i, b)),
            (any::<usize>(), byte).prop_map(|(i, b)| Mutation::Insert(i, b)),
            any::<usize>().prop_map(Mutation::Remove),
            any::<usize>().prop_map(Mutation::Truncate),
        ]
    }

    proptest! {
        #[test]
        fn generated_bodies_are_read_as_serde_json_reads_them((text, inside) in generated_body()) {
            let read = fast(&text);
            prop_assert_eq!(read.is_some(), inside, "{:?}", text);
        }

        #[test]
        fn changed_bodies_are_read_as_serde_json_reads_them(
            (text, _) in generated_body(),
            mutations in prop::collection::vec(mutation(), 1..4),
        ) {
            let mut bytes = text.into_bytes();
            for m in mutations {
                let len = bytes.len();
                match m {
                    Mutation::Replace(i, b) if len > 0 => bytes[i % len] = b,
                    Mutation::Insert(i, b) => bytes.insert(i % (len + 1), b),
                    Mutation::Remove(i) if len > 0 => {
                        bytes.remove(i % len);
                    }
                    Mutation::Truncate(i) => bytes.truncate(i % (len + 1)),
                    _ => {}
                }
            }
            // Only UTF-8 bodies reach the fast path.
            if let Ok(text) = std::str::from_utf8(&bytes) {
                fast(text);
            }
        }
    }
}
