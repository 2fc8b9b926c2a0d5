//! The anomaly payload's JSON (SPEC 4 step 8), read as the deployed Go validators read it.
//!
//! Go's `encoding/json` checks a document with its scanner before decoding it: well-formed
//! RFC 8259 JSON, containers nested at most 10,000 deep (`maxNestingDepth`). serde_json
//! refuses 128 levels, so step 8 does not use it on the document: [`scan_metadata`] is a
//! validating scanner with Go's acceptance, iterative (one bit per open container, no
//! recursion, so no input can exhaust the stack), that keeps the raw tokens of the top-level
//! object's `severity` and `confidence` and builds nothing else. Like Go's scanner it takes
//! any byte from 0x20 up inside strings (invalid UTF-8 included) and any `\uXXXX` escape
//! (a lone surrogate included); unlike serde_json, which refuses both.
//!
//! One serde_json behaviour is kept on purpose, as step 8 had it before: a number anywhere
//! in the document too large for a 64-bit float (`1e400`) refuses the whole payload.

use std::fmt;

/// Go's `encoding/json` `maxNestingDepth`: 10,000 open containers are accepted, 10,001 are not.
pub(crate) const MAX_NESTING: usize = 10_000;

/// A number token this long or longer, or with an exponent, is checked for range; a shorter
/// one without an exponent is below 1e300 and so a finite float.
const SHORT_NUMBER: usize = 300;

/// The top-level members step 8 compares, as their last occurrence left them (a repeated key
/// is decided by its last value, as in Go and in serde_json's `Value`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Metadata<'a> {
    /// The value of `severity`, if present.
    pub(crate) severity: Option<Member<'a>>,
    /// The value of `confidence`, if present.
    pub(crate) confidence: Option<Member<'a>>,
}

/// A top-level member's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Member<'a> {
    /// A number, as its raw token (well-formed and in range).
    Number(&'a str),
    /// A string, object, array, `true`, `false` or `null`.
    Other,
}

/// Why a payload is not a JSON object as step 8 reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonError {
    /// Not well-formed: the byte found at `at` (none: the input ended) where it was `what`.
    Syntax {
        /// What the scanner was reading, in Go's words.
        what: &'static str,
        /// The offending byte's offset.
        at: usize,
        /// The offending byte; `None` at the end of the input.
        found: Option<u8>,
    },
    /// More than [`MAX_NESTING`] containers open at byte `at`.
    TooDeep {
        /// The offset of the container that went too deep.
        at: usize,
    },
    /// A number at byte `at` too large for a 64-bit float.
    OutOfRange {
        /// The number's offset.
        at: usize,
    },
    /// Well-formed JSON whose top-level value is not an object.
    NotObject,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            JsonError::Syntax {
                found: None, at, ..
            } => write!(f, "unexpected end of JSON input at byte {at}"),
            JsonError::Syntax {
                what,
                at,
                found: Some(b),
            } if b.is_ascii_graphic() || b == b' ' => {
                write!(f, "invalid character '{}' {what} at byte {at}", b as char)
            }
            JsonError::Syntax {
                what,
                at,
                found: Some(b),
            } => write!(f, "invalid byte 0x{b:02x} {what} at byte {at}"),
            JsonError::TooDeep { at } => write!(
                f,
                "containers nested deeper than {MAX_NESTING} levels at byte {at} \
                 (Go's encoding/json limit)"
            ),
            JsonError::OutOfRange { at } => {
                write!(f, "number at byte {at} is out of range of a 64-bit float")
            }
            JsonError::NotObject => f.write_str("top-level value is not an object"),
        }
    }
}

/// Checks `json` as Go's `encoding/json` scanner does and returns the top-level object's
/// `severity` and `confidence`.
pub(crate) fn scan_metadata(json: &[u8]) -> Result<Metadata<'_>, JsonError> {
    let mut s = Scanner {
        buf: json,
        pos: 0,
        just_opened: false,
    };
    let mut open = Nesting::default();
    let mut meta = Metadata::default();
    // The top-level key whose value is read next, when it is one step 8 compares.
    let mut wanted: Option<Wanted> = None;
    s.skip_whitespace();
    let is_object = s.peek() == Some(b'{');
    'value: loop {
        let member = s.value(&mut open)?;
        if let Some(w) = wanted.take() {
            *w.slot(&mut meta) = Some(member);
        }
        if s.just_opened {
            s.skip_whitespace();
            match (open.innermost(), s.peek()) {
                (Some(Container::Object), Some(b'}')) | (Some(Container::Array), Some(b']')) => {
                    s.pos += 1;
                    open.close();
                }
                (Some(Container::Object), _) => {
                    wanted = s.key(open.depth())?;
                    continue 'value;
                }
                _ => continue 'value,
            }
        }
        // After a value: close containers, or go on to the next element.
        while let Some(container) = open.innermost() {
            s.skip_whitespace();
            match (container, s.bump()) {
                (Container::Object, Some(b',')) => {
                    s.skip_whitespace();
                    wanted = s.key(open.depth())?;
                    continue 'value;
                }
                (Container::Array, Some(b',')) => {
                    s.skip_whitespace();
                    continue 'value;
                }
                (Container::Object, Some(b'}')) | (Container::Array, Some(b']')) => open.close(),
                (Container::Object, found) => {
                    return Err(s.error_before("after object key:value pair", found))
                }
                (Container::Array, found) => {
                    return Err(s.error_before("after array element", found))
                }
            }
        }
        break;
    }
    s.skip_whitespace();
    if let Some(found) = s.peek() {
        return Err(s.error("after top-level value", Some(found)));
    }
    if is_object {
        Ok(meta)
    } else {
        Err(JsonError::NotObject)
    }
}

/// A top-level key step 8 compares.
#[derive(Debug, Clone, Copy)]
enum Wanted {
    Severity,
    Confidence,
}

impl Wanted {
    fn of(raw_key: &[u8]) -> Option<Wanted> {
        if key_equals(raw_key, "severity") {
            Some(Wanted::Severity)
        } else if key_equals(raw_key, "confidence") {
            Some(Wanted::Confidence)
        } else {
            None
        }
    }

    fn slot<'m, 'a>(self, meta: &'m mut Metadata<'a>) -> &'m mut Option<Member<'a>> {
        match self {
            Wanted::Severity => &mut meta.severity,
            Wanted::Confidence => &mut meta.confidence,
        }
    }
}

/// Whether the raw (still escaped, well-formed) key `raw` unescapes to the ASCII `target`.
fn key_equals(raw: &[u8], target: &str) -> bool {
    if !raw.contains(&b'\\') {
        return raw == target.as_bytes();
    }
    let mut want = target.bytes();
    let mut i = 0;
    while i < raw.len() {
        let unit = match raw[i] {
            b'\\' => {
                let (unit, len) = unescape(&raw[i + 1..]);
                i += 1 + len;
                unit
            }
            b => {
                i += 1;
                u32::from(b)
            }
        };
        // Everything else (non-ASCII bytes, escapes of other characters) cannot match.
        if want.next().map(u32::from) != Some(unit) {
            return false;
        }
    }
    want.next().is_none()
}

/// One well-formed escape after its backslash: the code unit it stands for and its length.
fn unescape(esc: &[u8]) -> (u32, usize) {
    let unit = match esc[0] {
        b'b' => 0x08,
        b'f' => 0x0c,
        b'n' => u32::from(b'\n'),
        b'r' => u32::from(b'\r'),
        b't' => u32::from(b'\t'),
        b'u' => {
            let hex = std::str::from_utf8(&esc[1..5]).expect("scanned as hex digits");
            return (u32::from_str_radix(hex, 16).expect("scanned"), 5);
        }
        other => u32::from(other),
    };
    (unit, 1)
}

/// The kind of an open container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    Object,
    Array,
}

/// The open containers, one bit each (set: an object); the first 64 need no allocation.
#[derive(Debug, Default)]
struct Nesting {
    depth: usize,
    low: u64,
    high: Vec<u64>,
}

impl Nesting {
    fn depth(&self) -> usize {
        self.depth
    }

    /// Opens a container; false when that would exceed [`MAX_NESTING`].
    fn open(&mut self, c: Container) -> bool {
        if self.depth == MAX_NESTING {
            return false;
        }
        let (word, bit) = self.word_mut(self.depth);
        *word = (*word & !(1 << bit)) | (u64::from(c == Container::Object) << bit);
        self.depth += 1;
        true
    }

    fn close(&mut self) {
        self.depth -= 1;
    }

    fn innermost(&self) -> Option<Container> {
        let i = self.depth.checked_sub(1)?;
        let word = if i < 64 {
            self.low
        } else {
            self.high[(i - 64) / 64]
        };
        Some(if word >> (i % 64) & 1 == 1 {
            Container::Object
        } else {
            Container::Array
        })
    }

    fn word_mut(&mut self, i: usize) -> (&mut u64, usize) {
        if i < 64 {
            return (&mut self.low, i);
        }
        let w = (i - 64) / 64;
        if w == self.high.len() {
            self.high.push(0);
        }
        (&mut self.high[w], i % 64)
    }
}

struct Scanner<'a> {
    buf: &'a [u8],
    pos: usize,
    /// The last value read opened a container (its elements come next).
    just_opened: bool,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    /// Go's whitespace: space, tab, carriage return, line feed.
    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
    }

    fn error(&self, what: &'static str, found: Option<u8>) -> JsonError {
        JsonError::Syntax {
            what,
            at: self.pos,
            found,
        }
    }

    /// An error about the byte just consumed by [`Scanner::bump`].
    fn error_before(&self, what: &'static str, found: Option<u8>) -> JsonError {
        JsonError::Syntax {
            what,
            at: self.pos - usize::from(found.is_some()),
            found,
        }
    }

    /// Reads one value; a container is only opened (its elements are the caller's loop).
    fn value(&mut self, open: &mut Nesting) -> Result<Member<'a>, JsonError> {
        self.just_opened = false;
        let container = match self.peek() {
            Some(b'{') => Container::Object,
            Some(b'[') => Container::Array,
            Some(b'"') => return self.string().map(|_| Member::Other),
            Some(b'-' | b'0'..=b'9') => return self.number().map(Member::Number),
            Some(b't') => return self.literal(b"true"),
            Some(b'f') => return self.literal(b"false"),
            Some(b'n') => return self.literal(b"null"),
            found => return Err(self.error("looking for beginning of value", found)),
        };
        if !open.open(container) {
            return Err(JsonError::TooDeep { at: self.pos });
        }
        self.pos += 1;
        self.just_opened = true;
        Ok(Member::Other)
    }

    /// Reads an object key and its colon; the key when step 8 compares it (at depth 1).
    fn key(&mut self, depth: usize) -> Result<Option<Wanted>, JsonError> {
        if self.peek() != Some(b'"') {
            return Err(self.error("looking for beginning of object key string", self.peek()));
        }
        let raw = self.string()?;
        self.skip_whitespace();
        match self.bump() {
            Some(b':') => {}
            found => return Err(self.error_before("after object key", found)),
        }
        self.skip_whitespace();
        Ok(if depth == 1 { Wanted::of(raw) } else { None })
    }

    /// Reads a string from its opening quote; returns its raw content (escapes unresolved).
    fn string(&mut self) -> Result<&'a [u8], JsonError> {
        self.pos += 1;
        let start = self.pos;
        loop {
            let rest = &self.buf[self.pos..];
            let Some(i) = string_stop(rest) else {
                self.pos = self.buf.len();
                return Err(self.error("in string literal", None));
            };
            self.pos += i;
            match rest[i] {
                b'"' => {
                    self.pos += 1;
                    return Ok(&self.buf[start..self.pos - 1]);
                }
                b'\\' => {
                    self.pos += 1;
                    self.escape()?;
                }
                control => return Err(self.error("in string literal", Some(control))),
            }
        }
    }

    /// Reads an escape after its backslash.
    fn escape(&mut self) -> Result<(), JsonError> {
        match self.bump() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(()),
            Some(b'u') => {
                for _ in 0..4 {
                    match self.peek() {
                        Some(b) if b.is_ascii_hexdigit() => self.pos += 1,
                        found => {
                            return Err(self.error("in \\u hexadecimal character escape", found))
                        }
                    }
                }
                Ok(())
            }
            found => Err(self.error_before("in string escape code", found)),
        }
    }

    /// Reads `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?` and checks its range.
    fn number(&mut self) -> Result<&'a str, JsonError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            found => return Err(self.error("in numeric literal", found)),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.some_digits()?;
        }
        let exponent = matches!(self.peek(), Some(b'e' | b'E'));
        if exponent {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.some_digits()?;
        }
        let token = std::str::from_utf8(&self.buf[start..self.pos]).expect("ASCII digits");
        if (exponent || token.len() >= SHORT_NUMBER)
            && serde_json::from_str::<serde_json::Number>(token).is_err()
        {
            return Err(JsonError::OutOfRange { at: start });
        }
        Ok(token)
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }

    fn some_digits(&mut self) -> Result<(), JsonError> {
        match self.peek() {
            Some(b'0'..=b'9') => {
                self.digits();
                Ok(())
            }
            found => Err(self.error("in numeric literal", found)),
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<Member<'a>, JsonError> {
        for &want in word {
            match self.peek() {
                Some(b) if b == want => self.pos += 1,
                found => return Err(self.error("in literal true, false or null", found)),
            }
        }
        Ok(Member::Other)
    }
}

/// The first byte of `s` that ends a string's plain run: a quote, a backslash or a control
/// byte (below 0x20). A payload is mostly long strings, so the run is skipped a vector at a
/// time (64 bytes with AVX2 where the processor has it, else 16 with SSE2, part of every
/// x86_64; eight-byte words elsewhere), then byte by byte inside the block that holds the stop.
/// The vectors are written out rather than left to the compiler, so the scan stays fast in the
/// static binary, whose library code is optimised for size (64 KiB: ~1.3 us with AVX2, ~2.6 us
/// with SSE2, against 15 us eight bytes at a time and more byte by byte: longer than the
/// payload's SHA-256).
fn string_stop(s: &[u8]) -> Option<usize> {
    let i = plain_blocks(s);
    s[i..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|p| i + p)
}

/// How many leading bytes of `s` are whole vector blocks without a stop byte (fewer than 16
/// bytes are left before the first stop, or the end).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)] // the crate's one place with `unsafe`: see below
fn plain_blocks(s: &[u8]) -> usize {
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: `plain_blocks_avx2` needs AVX2, which the processor was just found to have.
        unsafe { plain_blocks_avx2(s) }
    } else {
        // SAFETY: `plain_blocks_sse2` only needs SSE2, which is part of the x86_64 baseline:
        // every x86_64 processor has it, so the feature is always present where this runs.
        unsafe { plain_blocks_sse2(s) }
    }
}

/// [`plain_blocks`] with AVX2 vectors, 64 bytes (two vectors, each loaded from four checked
/// eight-byte reads as in [`plain_blocks_sse2`]) per test, then SSE2 on what is left. A stop is
/// found with two compares a vector: XOR with 0x02 moves the quote (0x22) to 0x20 and keeps the
/// control bytes below it, so "at most 0x20 after the XOR" is exactly quote-or-control; the
/// backslash is compared on its own.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn plain_blocks_avx2(s: &[u8]) -> usize {
    use std::arch::x86_64::{
        _mm256_cmpeq_epi8, _mm256_min_epu8, _mm256_movemask_epi8, _mm256_or_si256,
        _mm256_set1_epi8, _mm256_set_epi64x, _mm256_xor_si256,
    };
    let flip = _mm256_set1_epi8(0x02);
    let quote_or_control = _mm256_set1_epi8(0x20);
    let backslash = _mm256_set1_epi8(b'\\' as i8);
    let mut i = 0;
    for block in s.chunks_exact(64) {
        // Written out, not a loop: the size-optimised build would keep the loop.
        let (a, rest) = block.split_at(8);
        let (b, rest) = rest.split_at(8);
        let (c, rest) = rest.split_at(8);
        let (d, rest) = rest.split_at(8);
        let (e, rest) = rest.split_at(8);
        let (f, rest) = rest.split_at(8);
        let (g, h) = rest.split_at(8);
        let low = _mm256_set_epi64x(
            i64::from_le_bytes(d.try_into().unwrap_or_default()),
            i64::from_le_bytes(c.try_into().unwrap_or_default()),
            i64::from_le_bytes(b.try_into().unwrap_or_default()),
            i64::from_le_bytes(a.try_into().unwrap_or_default()),
        );
        let high = _mm256_set_epi64x(
            i64::from_le_bytes(h.try_into().unwrap_or_default()),
            i64::from_le_bytes(g.try_into().unwrap_or_default()),
            i64::from_le_bytes(f.try_into().unwrap_or_default()),
            i64::from_le_bytes(e.try_into().unwrap_or_default()),
        );
        let (low_flipped, high_flipped) =
            (_mm256_xor_si256(low, flip), _mm256_xor_si256(high, flip));
        let stops = _mm256_or_si256(
            _mm256_or_si256(
                _mm256_cmpeq_epi8(_mm256_min_epu8(low_flipped, quote_or_control), low_flipped),
                _mm256_cmpeq_epi8(low, backslash),
            ),
            _mm256_or_si256(
                _mm256_cmpeq_epi8(
                    _mm256_min_epu8(high_flipped, quote_or_control),
                    high_flipped,
                ),
                _mm256_cmpeq_epi8(high, backslash),
            ),
        );
        if _mm256_movemask_epi8(stops) != 0 {
            break;
        }
        i += 64;
    }
    i + plain_blocks_sse2(&s[i..])
}

/// [`plain_blocks`] with SSE2 vectors (no pointer is dereferenced: each block is loaded from
/// two checked eight-byte reads).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn plain_blocks_sse2(s: &[u8]) -> usize {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        _mm_set_epi64x,
    };
    let quote = _mm_set1_epi8(b'"' as i8);
    let backslash = _mm_set1_epi8(b'\\' as i8);
    let below = _mm_set1_epi8(0x1f);
    let mut i = 0;
    for block in s.chunks_exact(16) {
        // Written out, not a closure: the size-optimised build would call it, twice a block.
        let (low, high) = block.split_at(8);
        let low = i64::from_le_bytes(low.try_into().unwrap_or_default());
        let high = i64::from_le_bytes(high.try_into().unwrap_or_default());
        let v = _mm_set_epi64x(high, low);
        // A control byte is one that the unsigned minimum with 0x1f leaves unchanged.
        let control = _mm_cmpeq_epi8(_mm_min_epu8(v, below), v);
        let stops = _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
            control,
        );
        if _mm_movemask_epi8(stops) != 0 {
            break;
        }
        i += 16;
    }
    i
}

/// How many leading bytes of `s` are whole eight-byte words without a stop byte.
#[cfg(not(target_arch = "x86_64"))]
fn plain_blocks(s: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Whether any byte of `w` is below `n` (n <= 128): exact, whatever the other bytes are.
    let any_below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH != 0;
    let mut i = 0;
    for word in s.chunks_exact(8) {
        let w = u64::from_le_bytes(word.try_into().unwrap_or_default());
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        if any_below(quote, 1) || any_below(backslash, 1) || any_below(w, 0x20) {
            break;
        }
        i += 8;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(json: &str) -> bool {
        scan_metadata(json.as_bytes()).is_ok()
    }

    /// Well-formed or not exactly where serde_json says so (all inputs here are valid UTF-8,
    /// free of lone surrogates and shallow: where the two must agree).
    #[test]
    fn accepts_exactly_what_serde_json_accepts_where_both_decide() {
        let cases = [
            "{}",
            " {} ",
            "\t\r\n{\t\r\n}\t\r\n",
            "{\"a\":1}",
            "{\"a\" : [ 1 , 2 , { } , [ ] ] }",
            "{\"a\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\"}",
            "{\"a\":true,\"b\":false,\"c\":null}",
            "{\"a\":-0,\"b\":0.5,\"c\":1e5,\"d\":1E+5,\"e\":-1.25e-3,\"f\":10}",
            "{\"a\":1e-400}",
            "{\"é\":\"ü\"}",
            "",
            " ",
            "{",
            "}",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{,}",
            "{\"a\":1 \"b\":2}",
            "{a:1}",
            "{'a':1}",
            "[1,]",
            "[,1]",
            "{\"a\":[1 2]}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":-}",
            "{\"a\":+1}",
            "{\"a\":1e}",
            "{\"a\":1e+}",
            "{\"a\":0x10}",
            "{\"a\":NaN}",
            "{\"a\":Infinity}",
            "{\"a\":tru}",
            "{\"a\":nul}",
            "{\"a\":True}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12g4\"}",
            "{\"a\":\"\\u12\"}",
            "{\"a\":\"\t\"}",
            "{\"a\":\"\n\"}",
            "{\"a\":\"unterminated}",
            "{} x",
            "{}}",
            "{},",
            "{}{}",
            "\u{feff}{}",
            "\u{0c}{}",
            "{}\u{a0}",
            "{\"a\":1e400}",
            "{\"a\":[-1e400]}",
        ];
        for json in cases {
            let serde = serde_json::from_str::<serde_json::Value>(json).is_ok();
            let ours = match scan_metadata(json.as_bytes()) {
                Ok(_) | Err(JsonError::NotObject) => true,
                Err(_) => false,
            };
            assert_eq!(ours, serde, "{json:?}");
        }
    }

    #[test]
    fn takes_what_go_takes_and_serde_json_does_not() {
        // Go's scanner takes invalid UTF-8 and lone surrogate escapes inside strings.
        assert!(scan_metadata(b"{\"a\":\"\xff\xfe\"}").is_ok());
        assert!(scan_metadata(b"{\"\xc3\":1}").is_ok());
        assert!(ok(r#"{"a":"\ud800","b":"\udc00x"}"#));
        // ...but not outside them.
        assert!(scan_metadata(b"{\"a\":1}\xff").is_err());
        assert!(scan_metadata(b"{\xff:1}").is_err());
    }

    #[test]
    fn the_top_level_object_members_are_kept_last_one_winning() {
        let meta = scan_metadata(br#"{"severity":3,"x":{"severity":1},"severity":7}"#).unwrap();
        assert_eq!(meta.severity, Some(Member::Number("7")));
        assert_eq!(meta.confidence, None);
        let meta = scan_metadata(br#"{"confidence":0.5,"confidence":"0.5"}"#).unwrap();
        assert_eq!(meta.confidence, Some(Member::Other));
        // Keys compare after unescaping.
        let meta = scan_metadata(br#"{"sev\u0065rity":4,"\u0063onfidenc\u0065":1e-1}"#).unwrap();
        assert_eq!(meta.severity, Some(Member::Number("4")));
        assert_eq!(meta.confidence, Some(Member::Number("1e-1")));
        for near in [
            r#"{"Severity":4}"#,
            r#"{"severity ":4}"#,
            r#"{"sev\u00e9rity":4}"#,
            r#"{"severit":4}"#,
            r#"{"severity\u0000":4}"#,
            r#"[{"severity":4}]"#,
        ] {
            let got = scan_metadata(near.as_bytes()).map(|m| m.severity);
            assert!(
                matches!(got, Ok(None) | Err(JsonError::NotObject)),
                "{near}"
            );
        }
    }

    #[test]
    fn errors_say_what_and_where() {
        let e = scan_metadata(b"{\"a\":1,}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid character '}' looking for beginning of object key string at byte 7"
        );
        let e = scan_metadata(b"{\"a\":\"\x01\"}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid byte 0x01 in string literal at byte 6"
        );
        let e = scan_metadata(b"{\"a\":[1").unwrap_err();
        assert_eq!(e.to_string(), "unexpected end of JSON input at byte 7");
        let e = scan_metadata(b"{\"a\":2e999}").unwrap_err();
        assert_eq!(e, JsonError::OutOfRange { at: 5 });
    }

    /// Every vector scan this processor can run stops within 16 bytes before `end` (the first
    /// stop byte, or the end of `s`), never past it.
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    fn for_each_vector_scan(s: &[u8], end: usize) {
        // SAFETY: SSE2 is part of the x86_64 baseline; AVX2 only where detected.
        let mut scans = vec![("sse2", unsafe { plain_blocks_sse2(s) })];
        if std::arch::is_x86_feature_detected!("avx2") {
            scans.push(("avx2", unsafe { plain_blocks_avx2(s) }));
        }
        for (name, i) in scans {
            assert!(
                i <= end && end - i < 16,
                "{name}: {i} for a stop at {end} in {s:?}"
            );
        }
    }

    #[test]
    fn the_word_scan_stops_where_the_byte_scan_does() {
        let bytes = [
            b'a', b'"', b'\\', 0x00, 0x1f, 0x20, 0x7f, 0x80, 0xff, b'!', b'#',
        ];
        // Short runs (the block and byte loops) and runs around one and two 64-byte spans.
        for len in (0..40).chain(60..70).chain(124..132) {
            for at in 0..len {
                for &stop in &bytes {
                    let mut s = vec![b'x'; len];
                    s[at] = stop;
                    // Neighbours that trip naive word tricks (borrows, high bytes).
                    if at + 1 < len {
                        s[at + 1] = 0x80;
                    }
                    if at > 0 {
                        s[at - 1] = 0x21;
                    }
                    let want = s.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
                    assert_eq!(string_stop(&s), want, "{s:?}");
                    #[cfg(target_arch = "x86_64")]
                    for_each_vector_scan(&s, want.unwrap_or(len));
                }
            }
        }
    }

    #[test]
    fn wide_documents_scan_flat() {
        let mut wide = String::from("{\"severity\":7");
        for i in 0..20_000 {
            wide.push_str(&format!(",\"k{i}\":[{i},\"v\",{{}},[],null]"));
        }
        wide.push('}');
        assert_eq!(
            scan_metadata(wide.as_bytes()).unwrap().severity,
            Some(Member::Number("7"))
        );
        let long = format!("{{\"a\":[{}1]}}", "1,".repeat(200_000));
        assert!(ok(&long));
    }

    #[test]
    fn nesting_bits_survive_deep_mixed_containers() {
        // Alternating objects and arrays past the 64 inline bits, closed in order.
        let depth = 1000;
        let mut json = String::new();
        for i in 0..depth {
            json.push_str(if i % 3 == 0 { "[" } else { "{\"k\":" });
        }
        json.push('1');
        for i in (0..depth).rev() {
            json.push(if i % 3 == 0 { ']' } else { '}' });
        }
        assert!(matches!(
            scan_metadata(json.as_bytes()),
            Err(JsonError::NotObject)
        ));
        // The same with one closer swapped is refused.
        let swapped = json.replacen("]}", "}}", 1);
        assert!(!matches!(
            scan_metadata(swapped.as_bytes()),
            Err(JsonError::NotObject)
        ));
    }
}
