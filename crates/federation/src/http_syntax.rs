//! The two bits of RFC 9110 header syntax both of our header parsers need (X-Matrix
//! parameters and the multipart content type / part headers): token characters and
//! quoted strings.

/// RFC 9110 `tchar`: what header names and parameter names are made of.
pub(crate) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Reads a quoted string whose opening `"` was already consumed: returns the text with
/// backslash escapes undone, and what follows the closing quote. `None` if the quote is
/// never closed or the text holds a control character (none belongs in a header value).
pub(crate) fn quoted_string(after_open_quote: &str) -> Option<(String, &str)> {
    let mut text = String::new();
    let mut chars = after_open_quote.char_indices();
    loop {
        let (i, c) = chars.next()?;
        let c = match c {
            '"' => return Some((text, &after_open_quote[i + 1..])),
            '\\' => chars.next()?.1,
            c => c,
        };
        if c.is_control() {
            return None;
        }
        text.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_strings() {
        assert_eq!(quoted_string("abc\",x"), Some(("abc".into(), ",x")));
        assert_eq!(quoted_string("\""), Some((String::new(), "")));
        assert_eq!(
            quoted_string(r#"a\"b\\c\d"rest"#),
            Some((r#"a"b\cd"#.into(), "rest"))
        );
        assert_eq!(quoted_string("a;b:c\" ;"), Some(("a;b:c".into(), " ;")));
        assert_eq!(quoted_string("unterminated"), None);
        assert_eq!(quoted_string("ends in escape\\"), None);
        assert_eq!(quoted_string("tab\there\""), None);
        assert_eq!(quoted_string("escaped\\\nnewline\""), None);
    }

    #[test]
    fn token_chars() {
        assert!(b"Content-Type".iter().all(|&b| is_token_char(b)));
        for b in *b" :;,\"()/=?@[]{}\\\t" {
            assert!(!is_token_char(b), "{:?}", b as char);
        }
    }
}
