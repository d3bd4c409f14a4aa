//! Matrix canonical JSON (spec appendix "Signing JSON"): the one byte string every server
//! signs and verifies for a given JSON value.
//!
//! Rules: UTF-8, no insignificant whitespace, object keys sorted by Unicode code point,
//! numbers integers in ±(2^53 − 1) without exponent or fraction (`-0` is written `0`),
//! and strings with the shortest escapes: `\"` `\\` `\b` `\f` `\n` `\r` `\t`, other
//! characters below U+0020 as lowercase `\u00XX`, everything else (including non-ASCII,
//! U+007F, U+2028) as itself.

use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

use crate::error::CanonicalJsonError;

/// Largest magnitude of a canonical JSON integer: 2^53 − 1, the range an IEEE double
/// holds exactly (the spec's reason).
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Deepest nesting of arrays and objects we encode. serde_json's parser already stops at
/// 128; values built in code get the same bound so encoding cannot overflow the stack.
pub const MAX_DEPTH: usize = 128;

/// Encodes `value` as canonical JSON.
pub fn to_canonical_json(value: &Value) -> Result<String, CanonicalJsonError> {
    let mut out = String::new();
    write_value(&mut out, value, 0)?;
    Ok(out)
}

/// Canonical JSON of a signed object as signatures cover it: without its `signatures` and
/// `unsigned` members (spec: "Signing Details").
pub fn to_canonical_json_for_signing(value: &Value) -> Result<String, CanonicalJsonError> {
    let object = value.as_object().ok_or(CanonicalJsonError::NotAnObject)?;
    let mut out = String::new();
    write_object(&mut out, object, 0, &["signatures", "unsigned"])?;
    Ok(out)
}

fn write_value(out: &mut String, value: &Value, depth: usize) -> Result<(), CanonicalJsonError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n)?,
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            let depth = deeper(depth)?;
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item, depth)?;
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map, depth, &[])?,
    }
    Ok(())
}

fn deeper(depth: usize) -> Result<usize, CanonicalJsonError> {
    if depth >= MAX_DEPTH {
        return Err(CanonicalJsonError::TooDeep { max: MAX_DEPTH });
    }
    Ok(depth + 1)
}

fn write_object(
    out: &mut String,
    map: &Map<String, Value>,
    depth: usize,
    skip: &[&str],
) -> Result<(), CanonicalJsonError> {
    let depth = deeper(depth)?;
    // Sorted explicitly rather than trusting the map's order: serde_json's
    // `preserve_order` feature (which any crate in a build may switch on) keeps insertion
    // order. `str` ordering is byte order on UTF-8, which equals code-point order.
    let mut entries: Vec<(&String, &Value)> = map
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, key);
        out.push(':');
        write_value(out, value, depth)?;
    }
    out.push('}');
    Ok(())
}

fn write_number(out: &mut String, n: &Number) -> Result<(), CanonicalJsonError> {
    let int = if let Some(i) = n.as_i64() {
        i
    } else if n.is_u64() {
        // Only u64 values above i64::MAX land here: all out of range.
        return Err(CanonicalJsonError::IntegerOutOfRange(n.to_string()));
    } else {
        // serde_json reads `1e10` and `-0` as floats. The spec's own example encodes
        // `{"a": -0, "b": 1e10}` as `{"a":0,"b":10000000000}`: a float with an integral
        // value is that integer; anything with a fraction is refused.
        let f = n.as_f64().unwrap_or(f64::NAN);
        if !f.is_finite() || f.fract() != 0.0 {
            return Err(CanonicalJsonError::NotAnInteger(n.to_string()));
        }
        if f.abs() > MAX_SAFE_INTEGER as f64 {
            return Err(CanonicalJsonError::IntegerOutOfRange(n.to_string()));
        }
        // Exact: |f| <= 2^53 - 1 and integral.
        f as i64
    };
    if !(-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&int) {
        return Err(CanonicalJsonError::IntegerOutOfRange(int.to_string()));
    }
    // `0` for -0 comes for free: the integer has no sign bit.
    let _ = write!(out, "{int}");
    Ok(())
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(text: &str) -> String {
        to_canonical_json(&serde_json::from_str(text).unwrap()).unwrap()
    }

    #[test]
    fn spec_examples() {
        // Every example of the spec appendix "Canonical JSON", input as written there.
        assert_eq!(canon("{}"), "{}");
        assert_eq!(
            canon("{\n    \"one\": 1,\n    \"two\": \"Two\"\n}"),
            r#"{"one":1,"two":"Two"}"#
        );
        assert_eq!(
            canon("{\n    \"b\": \"2\",\n    \"a\": \"1\"\n}"),
            r#"{"a":"1","b":"2"}"#
        );
        assert_eq!(canon(r#"{"b":"2","a":"1"}"#), r#"{"a":"1","b":"2"}"#);
        let nested = r#"{
            "auth": {
                "success": true,
                "mxid": "@john.doe:example.com",
                "profile": {
                    "display_name": "John Doe",
                    "three_pids": [
                        {"medium": "email", "address": "john.doe@example.org"},
                        {"medium": "msisdn", "address": "123456789"}
                    ]
                }
            }
        }"#;
        assert_eq!(
            canon(nested),
            r#"{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}"#
        );
        assert_eq!(canon(r#"{"a": "日本語"}"#), r#"{"a":"日本語"}"#);
        assert_eq!(canon(r#"{"本": 2, "日": 1}"#), r#"{"日":1,"本":2}"#);
        assert_eq!(canon(r#"{"a": "\u65E5"}"#), r#"{"a":"日"}"#);
        assert_eq!(canon(r#"{"a": null}"#), r#"{"a":null}"#);
        assert_eq!(
            canon(r#"{"a": -0, "b": 1e10}"#),
            r#"{"a":0,"b":10000000000}"#
        );
    }

    #[test]
    fn keys_sort_by_code_point_not_utf16() {
        // U+FF61 is below U+1F600 by code point, but above it in UTF-16 code units
        // (0xD83D...): code-point order puts U+FF61 first.
        let v = json!({"\u{1F600}": 1, "\u{FF61}": 2, "Z": 3, "a": 4, "é": 5});
        assert_eq!(
            to_canonical_json(&v).unwrap(),
            "{\"Z\":3,\"a\":4,\"é\":5,\"\u{FF61}\":2,\"\u{1F600}\":1}"
        );
    }

    #[test]
    fn string_escapes_are_the_shortest_forms() {
        let v = json!("q\"b\\ \u{08}\u{0c}\n\r\t \u{00}\u{01}\u{1f}\u{0b} \u{7f} \u{2028} /é");
        assert_eq!(
            to_canonical_json(&v).unwrap(),
            "\"q\\\"b\\\\ \\b\\f\\n\\r\\t \\u0000\\u0001\\u001f\\u000b \u{7f} \u{2028} /é\""
        );
    }

    #[test]
    fn integers_in_range_pass_and_others_fail() {
        assert_eq!(
            to_canonical_json(&json!([9007199254740991i64, -9007199254740991i64, 0, -1])).unwrap(),
            "[9007199254740991,-9007199254740991,0,-1]"
        );
        for bad in [
            json!(9007199254740992i64),
            json!(-9007199254740992i64),
            json!(u64::MAX),
            json!({"a": [i64::MIN]}),
            serde_json::from_str::<Value>("1e16").unwrap(),
        ] {
            assert!(
                matches!(
                    to_canonical_json(&bad),
                    Err(CanonicalJsonError::IntegerOutOfRange(_))
                ),
                "{bad}"
            );
        }
        for bad in [json!(1.5), json!({"x": [0.1]}), json!(-2.25)] {
            assert!(
                matches!(
                    to_canonical_json(&bad),
                    Err(CanonicalJsonError::NotAnInteger(_))
                ),
                "{bad}"
            );
        }
        // Integral floats are integers (the spec's `1e10` example); 2.0 from code too.
        assert_eq!(to_canonical_json(&json!(2.0)).unwrap(), "2");
    }

    #[test]
    fn arrays_keep_order_and_scalars_encode() {
        assert_eq!(
            to_canonical_json(&json!([3, "b", [true, false, null], {}, []])).unwrap(),
            r#"[3,"b",[true,false,null],{},[]]"#
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let mut v = json!(1);
        for _ in 0..MAX_DEPTH {
            v = json!([v]);
        }
        assert!(to_canonical_json(&v).is_ok());
        let too_deep = json!({ "a": v });
        assert_eq!(
            to_canonical_json(&too_deep),
            Err(CanonicalJsonError::TooDeep { max: MAX_DEPTH })
        );
    }

    #[test]
    fn signing_form_drops_signatures_and_unsigned_at_top_level_only() {
        let v = json!({
            "b": {"signatures": 1, "unsigned": 2},
            "signatures": {"x": {}},
            "unsigned": {"age_ts": 1},
            "a": 1
        });
        assert_eq!(
            to_canonical_json_for_signing(&v).unwrap(),
            r#"{"a":1,"b":{"signatures":1,"unsigned":2}}"#
        );
        assert_eq!(
            to_canonical_json_for_signing(&json!([1])),
            Err(CanonicalJsonError::NotAnObject)
        );
    }
}
