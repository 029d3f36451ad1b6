//! JSON objects written field by field into a byte buffer: the access log writes one per
//! request, and serde_json's generic machinery cost several times more than the line's
//! bytes. The output is the document serde_json writes for the same values (same string
//! escapes, same number forms, `null` for absent or non-finite numbers).

/// What each byte of a string becomes: 0 when copied as is, else the escape letter (`u` for
/// a `\u00XX` escape).
const ESCAPES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The key of a field with its punctuation, built at compile time by [`json_key!`]:
/// `{"name":` for the first field of an object (`json_key!(first "name")`), `,"name":` for
/// the others, and the same followed by the opening quote for string values.
#[derive(Clone, Copy)]
pub(crate) struct JsonKey {
    plain: &'static str,
    before_string: &'static str,
}

macro_rules! json_key {
    (first $name:literal) => {
        $crate::observe::json::JsonKey::new(
            concat!("{\"", $name, "\":"),
            concat!("{\"", $name, "\":\""),
        )
    };
    ($name:literal) => {
        $crate::observe::json::JsonKey::new(
            concat!(",\"", $name, "\":"),
            concat!(",\"", $name, "\":\""),
        )
    };
}
pub(crate) use json_key;

impl JsonKey {
    /// Used by [`json_key!`] only.
    pub(crate) const fn new(plain: &'static str, before_string: &'static str) -> Self {
        Self {
            plain,
            before_string,
        }
    }
}

/// One JSON object being appended to a buffer, field by field; keys come from
/// [`json_key!`] (plain ASCII identifiers that need no escaping), and [`JsonObject::end`]
/// closes it.
pub(crate) struct JsonObject<'o> {
    out: &'o mut Vec<u8>,
}

impl<'o> JsonObject<'o> {
    /// An object to be written at the end of `out`, opened by its first key.
    pub(crate) fn new(out: &'o mut Vec<u8>) -> Self {
        Self { out }
    }

    /// Closes the object.
    pub(crate) fn end(self) {
        self.out.push(b'}');
    }

    /// A string field.
    #[inline(always)]
    pub(crate) fn str(&mut self, key: JsonKey, value: &str) {
        let bytes = value.as_bytes();
        if is_plain(bytes) {
            self.out.extend_from_slice(key.before_string.as_bytes());
            self.out.extend_from_slice(bytes);
        } else {
            self.out.extend_from_slice(key.plain.as_bytes());
            write_escaped_str(self.out, bytes);
        }
        self.out.push(b'"');
    }

    /// An unsigned integer field.
    #[inline(always)]
    pub(crate) fn uint(&mut self, key: JsonKey, value: impl itoa::Integer) {
        self.out.extend_from_slice(key.plain.as_bytes());
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    /// A number field; `null` when not finite, as serde_json writes it.
    #[inline(always)]
    pub(crate) fn float(&mut self, key: JsonKey, value: f64) {
        self.out.extend_from_slice(key.plain.as_bytes());
        write_float(self.out, value);
    }

    /// An optional integer field (`null` when absent).
    #[inline(always)]
    pub(crate) fn opt_uint(&mut self, key: JsonKey, value: Option<impl itoa::Integer>) {
        match value {
            Some(v) => self.uint(key, v),
            None => self.null(key),
        }
    }

    /// An optional number field (`null` when absent).
    #[inline(always)]
    pub(crate) fn opt_float(&mut self, key: JsonKey, value: Option<f64>) {
        match value {
            Some(v) => self.float(key, v),
            None => self.null(key),
        }
    }

    #[inline(always)]
    fn null(&mut self, key: JsonKey) {
        self.out.extend_from_slice(key.plain.as_bytes());
        self.out.extend_from_slice(b"null");
    }
}

/// Largest number written by [`write_millis`]; larger ones go through serde_json.
const MILLIS_MAX: f64 = 1e9;

/// `value` as serde_json writes it (its shortest round-trip form, `null` when not finite).
/// Whole milliseconds, what the log holds, are written digit by digit: their shortest form
/// is the decimal with the trailing zeros of its three fraction digits dropped.
fn write_float(out: &mut Vec<u8>, value: f64) {
    if !value.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    if value.is_sign_positive() && value < MILLIS_MAX {
        // Rounded to the nearest millisecond (a truncating cast, no libm call); values
        // that are not whole milliseconds fail the check and take the general path.
        let millis = (value * 1000.0 + 0.5) as u64;
        if millis as f64 / 1000.0 == value {
            write_millis(out, millis);
            return;
        }
    }
    // Writing a finite f64 into a Vec cannot fail.
    let _ = serde_json::to_writer(out, &value);
}

/// `millis` / 1000 as a decimal: `0.0`, `0.005`, `1.5`, `12.25`.
fn write_millis(out: &mut Vec<u8>, millis: u64) {
    match millis / 1000 {
        // Most requests take under ten seconds: one digit, no copy.
        secs @ 0..=9 => out.push(b'0' + secs as u8),
        secs => out.extend_from_slice(itoa::Buffer::new().format(secs).as_bytes()),
    }
    out.push(b'.');
    let fraction = millis % 1000;
    let digits = [
        b'0' + (fraction / 100) as u8,
        b'0' + (fraction / 10 % 10) as u8,
        b'0' + (fraction % 10) as u8,
    ];
    let keep = match (digits[1], digits[2]) {
        (_, d) if d != b'0' => 3,
        (d, _) if d != b'0' => 2,
        _ => 1,
    };
    // Byte by byte: a copy of 1 to 3 bytes would be a `memcpy` call.
    for &digit in &digits[..keep] {
        out.push(digit);
    }
}

/// Whether any of 8 bytes needs escaping: a control byte, `"` or `\`. Exact about
/// whether such a byte exists (not where), which is all the scan needs.
fn any_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let quote_zero = quote.wrapping_sub(ONES) & !quote;
    let backslash_zero = backslash.wrapping_sub(ONES) & !backslash;
    (below_space | quote_zero | backslash_zero) & HIGHS != 0
}

/// Whether `bytes` can go into a JSON string as they are. Eight or more bytes are checked
/// a word at a time, the tail as the last eight bytes (overlapping the words before it,
/// which is harmless for a yes/no answer and needs no copy); shorter ones byte by byte.
#[inline(always)]
fn is_plain(bytes: &[u8]) -> bool {
    let Some(last) = bytes.last_chunk::<8>() else {
        return bytes.iter().all(|&b| ESCAPES[usize::from(b)] == 0);
    };
    bytes
        .chunks_exact(8)
        .filter_map(|word| <&[u8; 8]>::try_from(word).ok())
        .chain([last])
        .all(|word| !any_escape(u64::from_le_bytes(*word)))
}

/// `bytes` after an opening quote, for a string that needs escapes: kept out of line, as
/// most log values need none and are copied whole.
#[cold]
#[inline(never)]
fn write_escaped_str(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    write_escaped(out, bytes);
}

/// `bytes` with escapes written between runs of plain bytes.
fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut plain_from = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape = ESCAPES[usize::from(byte)];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[plain_from..i]);
        out.push(b'\\');
        out.push(escape);
        if escape == b'u' {
            out.extend_from_slice(b"00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        }
        plain_from = i + 1;
    }
    out.extend_from_slice(&bytes[plain_from..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `value` written as a field's value, without its key.
    fn string_field(value: &str) -> Vec<u8> {
        let mut out = Vec::new();
        JsonObject::new(&mut out).str(json_key!(first "k"), value);
        out.split_off(br#"{"k":"#.len())
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let tricky = [
            "",
            "plain",
            "quote \" and backslash \\",
            "controls \u{0}\u{1}\u{8}\t\n\u{b}\u{c}\r\u{1f}\u{7f}",
            "unicode é 漢字 🦀 \u{2028}",
            "</script>",
            "a long plain run of more than eight bytes, then \"quotes\" at odd offsets\\",
            "\u{1f}\u{1f}\u{1f}\u{1f}\u{1f}\u{1f}\u{1f}\u{1f}\u{1f}x",
        ];
        for s in tricky {
            assert_eq!(string_field(s), serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn every_escape_is_found_at_every_offset() {
        for byte in (0u8..0x80).chain([b'"', b'\\']) {
            // The escape in the words, in the overlapping tail, and as the last byte.
            for (offset, after) in (0..17).flat_map(|o| [(o, ""), (o, "b"), (o, "bcdefghij")]) {
                let mut text = "a".repeat(offset);
                text.push(char::from(byte));
                text.push_str(after);
                let expected = serde_json::to_vec(&text).unwrap();
                assert_eq!(string_field(&text), expected, "{text:?}");
            }
        }
    }

    #[test]
    fn floats_are_written_as_serde_json_writes_them() {
        let mut values: Vec<f64> = (0..20_000).map(|ms| ms as f64 / 1000.0).collect();
        values.extend([
            -0.0,
            -1.5,
            123_456.789,
            999_999_999.999,
            1e9,
            1e17,
            0.1 + 0.2,
            1e-7,
            3.0e-3,
        ]);
        for value in values {
            let mut out = Vec::new();
            write_float(&mut out, value);
            assert_eq!(out, serde_json::to_vec(&value).unwrap(), "{value}");
        }
    }

    #[test]
    fn numbers_and_nulls_match_serde_json() {
        let mut out = Vec::new();
        let mut object = JsonObject::new(&mut out);
        object.uint(json_key!(first "a"), 0u16);
        object.uint(json_key!("b"), u64::MAX);
        object.float(json_key!("c"), 0.005);
        object.float(json_key!("d"), 2.0);
        object.float(json_key!("e"), f64::NAN);
        object.opt_uint(json_key!("f"), None::<u16>);
        object.opt_float(json_key!("g"), Some(1.25));
        object.str(json_key!("h"), "x");
        object.end();
        let expected = serde_json::json!({
            "a": 0, "b": u64::MAX, "c": 0.005, "d": 2.0, "e": null, "f": null, "g": 1.25, "h": "x"
        });
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed, expected);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"a":0,"b":18446744073709551615,"c":0.005,"d":2.0,"e":null,"f":null,"g":1.25,"h":"x"}"#
        );
    }
}
