//! Percent-encoding and Base64 as S3 wants them, on the crates aws-sigv4
//! already brings in.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// What SigV4 escapes in a query value or bucket name: everything but its
/// unreserved characters `A-Za-z0-9-._~` (non-ASCII bytes always).
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
/// In a path, `/` too survives.
const ESCAPED_IN_PATH: &AsciiSet = &ESCAPED.remove(b'/');

/// Encode as SigV4 expects (upper-case hex), so the URL sent and the
/// canonical request the signer builds are the same bytes. `/` survives
/// only in paths; `+` is always escaped because some servers decode it as
/// a space.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    utf8_percent_encode(s, if keep_slash { ESCAPED_IN_PATH } else { ESCAPED }).to_string()
}

/// Decode `%XX` escapes (invalid ones are kept as written). `+` stays `+`:
/// replica URLs are paths, not form data.
pub fn percent_decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Standard Base64 with padding, for `Content-MD5` and SSE-C keys.
pub fn base64(data: &[u8]) -> String {
    base64_simd::STANDARD.encode_to_string(data)
}

/// Decode standard Base64 with padding; `None` for anything else (missing
/// padding, non-zero bits past the data), so a malformed SSE-C key is
/// refused rather than half-decoded.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    base64_simd::STANDARD.decode_to_vec(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_sigv4() {
        assert_eq!(uri_encode("a b+c/d~e_f.g-h", true), "a%20b%2Bc/d~e_f.g-h");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
        assert_eq!(uri_encode("ü", true), "%C3%BC");
        assert_eq!(uri_encode("percent%20", true), "percent%2520");
    }

    /// Exactly SigV4's unreserved characters pass unescaped.
    #[test]
    fn escapes_all_but_the_unreserved() {
        for b in 0..=255u8 {
            let s = [b];
            let Ok(text) = std::str::from_utf8(&s) else { continue };
            let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
            let expected = if unreserved {
                text.to_string()
            } else {
                format!("%{b:02X}")
            };
            assert_eq!(uri_encode(text, false), expected);
            assert_eq!(
                uri_encode(text, true),
                if b == b'/' { "/".to_string() } else { expected }
            );
        }
    }

    #[test]
    fn decodes_escapes() {
        assert_eq!(percent_decode("a%20b%2fc+d"), "a b/c+d");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%C3%BC"), "ü");
        assert_eq!(percent_decode("%%41%"), "%A%");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn base64_decodes_what_it_encodes() {
        for data in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            &[0, 255, 128, 7],
        ] {
            assert_eq!(base64_decode(&base64(data)).as_deref(), Some(data));
        }
    }

    #[test]
    fn base64_refuses_malformed_text() {
        for bad in [
            "Zg", "Zg=", "Z===", "Zm9v!A==", "Zh==", "Zm9=", "=Zg=", "Zg==Zg==", "Zm9v\n", " Zm9v", "Zm-v", "Zm_v",
            "Zg===",
        ] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }
}
