//! Percent-encoding and Base64, small enough to own rather than pull in
//! crates the plugin would otherwise not need.

/// Characters S3 (SigV4) leaves unescaped in a path or query value.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// Encode as SigV4 expects, so the URL sent and the canonical request the
/// signer builds are the same bytes. `/` survives only in paths; `+` is
/// always escaped because some servers decode it as a space.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 4);
    for &b in s.as_bytes() {
        if unreserved(b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Decode `%XX` escapes (invalid ones are kept as written). `+` stays `+`:
/// replica URLs are paths, not form data.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The standard Base64 alphabet (RFC 4648 section 4).
const BASE64_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// Base64's padding character.
const BASE64_PAD: u8 = b'=';
/// Base64 writes every 3 bytes as 4 characters.
const BASE64_GROUP: usize = 4;

/// Standard Base64 with padding, for `Content-MD5` and SSE-C keys.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = BASE64_ALPHABET;
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (chunk.get(1).copied().unwrap_or(0) as u32) << 8
            | chunk.get(2).copied().unwrap_or(0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decode standard Base64 with padding; `None` for anything else, so a
/// malformed SSE-C key is refused rather than half-decoded.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(BASE64_GROUP) {
        return None;
    }
    let pad = bytes.iter().rev().take_while(|&&b| b == BASE64_PAD).count();
    if pad > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / BASE64_GROUP * 3);
    let mut acc: u32 = 0;
    for (i, &b) in bytes[..bytes.len() - pad].iter().enumerate() {
        let value = BASE64_ALPHABET.iter().position(|&a| a == b)? as u32;
        acc = acc << 6 | value;
        if i % BASE64_GROUP == BASE64_GROUP - 1 {
            out.extend_from_slice(&acc.to_be_bytes()[1..]);
            acc = 0;
        }
    }
    // The last group: 2 or 3 characters carry 1 or 2 bytes; the bits
    // below them must be zero in canonical Base64.
    match pad {
        1 => {
            if acc & 0b11 != 0 {
                return None;
            }
            out.extend_from_slice(&((acc >> 2) as u16).to_be_bytes());
        }
        2 => {
            if acc & 0b1111 != 0 {
                return None;
            }
            out.push((acc >> 4) as u8);
        }
        _ => {}
    }
    Some(out)
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

    #[test]
    fn decodes_escapes() {
        assert_eq!(percent_decode("a%20b%2fc+d"), "a b/c+d");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%C3%BC"), "ü");
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
        for bad in ["Zg", "Zg=", "Z===", "Zm9v!A==", "Zh==", "Zm9=", "=Zg=", "Zg==Zg=="] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }
}
