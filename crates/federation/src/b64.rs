//! Base64 as Matrix uses it: written as standard unpadded base64 (spec appendix "Unpadded
//! Base64"), read with or without padding, because the spec asks readers to accept both
//! and Synapse's `signing.key` files carry either. Reading also ignores non-zero unused
//! trailing bits, as Python's decoder (Synapse, signedjson) does: the spec's own test seed
//! `…XA1` has them, and a strict decoder would refuse keys Synapse accepts.

use base64::alphabet::STANDARD;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// Standard alphabet; padding optional and trailing bits ignored on input.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Unpadded standard base64, the only form we emit.
pub(crate) fn encode(bytes: &[u8]) -> String {
    STANDARD_NO_PAD.encode(bytes)
}

/// Decodes standard base64 with or without `=` padding.
pub(crate) fn decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    LENIENT.decode(text)
}

/// Decodes into exactly `N` bytes; `None` for bad base64 or any other length.
pub(crate) fn decode_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    decode(text).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples_encode_unpadded() {
        // The spec appendix's table.
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(plain.as_bytes()), encoded);
            assert_eq!(decode(encoded).unwrap(), plain.as_bytes());
        }
    }

    #[test]
    fn decode_accepts_padding_and_rejects_garbage() {
        assert_eq!(decode("Zg==").unwrap(), b"f");
        assert_eq!(decode("Zm8=").unwrap(), b"fo");
        assert!(decode("Zm9v!").is_err());
        // URL-safe alphabet is not the Matrix alphabet.
        assert!(decode("-_8").is_err());
        assert_eq!(decode_array::<2>("Zm8"), Some(*b"fo"));
        // "Zm9" has two unused, non-zero bits after "fo".
        assert_eq!(decode("Zm9").unwrap(), b"fo");
        assert_eq!(decode_array::<3>("Zm8"), None);
    }
}
