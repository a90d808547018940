//! Client-side encryption of segments with age (DESIGN.md decision 20;
//! the object layout is in FORMAT.md, "Encrypted segments").
//!
//! A sealed object is an 88-byte header that names the segment without
//! telling anything about its content (flags = `FLAG_ENCRYPTED`), then an
//! age file (X25519 recipients) of the whole plaintext segment. The host
//! seals before a segment reaches any plugin and opens after one comes
//! back, so a plugin and its store see ciphertext only; everything else
//! (capture, restore, compaction) works on plaintext segments as before.

use super::format::{FLAG_ENCRYPTED, FormatError, HEADER_SIZE, Header};
use std::io::{BufRead, Read, Write};
use std::str::FromStr;

/// How many bytes from the start of a sealed object `peek` needs: the
/// outer header, the age header (about 250 bytes per recipient; this
/// leaves room for sixty) and age's first 64 KiB chunk with its tag.
pub const PEEK_BYTES: u64 = (HEADER_SIZE as u64) + (16 << 10) + (64 << 10) + 16;

/// A replica's age keys. Built from the config; never printed (its Debug
/// shows counts only), so keys reach no log line or error message.
pub struct Keys {
    recipients: Vec<age::x25519::Recipient>,
    identities: Vec<age::x25519::Identity>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "age keys ({} recipients, {} identities)", self.recipients.len(), self.identities.len())
    }
}

/// Keys are equal when they encrypt to the same recipients and hold the
/// same identities (compared by their public halves).
impl PartialEq for Keys {
    fn eq(&self, other: &Keys) -> bool {
        let publics = |k: &Keys| k.identities.iter().map(|i| i.to_public()).collect::<Vec<_>>();
        self.recipients == other.recipients && publics(self) == publics(other)
    }
}

/// Why sealed data could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No configured identity decrypts it: a person must supply the key.
    #[error(
        "it is encrypted to other age recipients than this replica's identities can decrypt (add the identity it was encrypted to; an old one is needed until the replica's next snapshot has passed retention)"
    )]
    NoMatchingKey,
    /// The object is damaged or not what its header says.
    #[error("{0}")]
    Corrupt(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Keys {
    /// Parse the config's `recipients` (`age1...`) and `identities`
    /// (`AGE-SECRET-KEY-1...`). Sluice reads back what it writes (to
    /// compact, to check an upload it retried), so at least one identity
    /// must belong to one of the recipients. Errors name entries by
    /// position, never by value.
    pub fn parse(recipients: &[String], identities: &[String]) -> Result<Keys, String> {
        let recipients = recipients
            .iter()
            .enumerate()
            .map(|(i, r)| {
                age::x25519::Recipient::from_str(r.trim())
                    .map_err(|e| format!("age recipients[{i}] is not an age X25519 public key (age1...): {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let identities = identities
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if s.trim().is_empty() {
                    return Err(format!("age identities[{i}] is empty (an unset environment variable?)"));
                }
                age::x25519::Identity::from_str(s.trim()).map_err(|e| {
                    format!("age identities[{i}] is not an age X25519 secret key (AGE-SECRET-KEY-1...): {e}")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if recipients.is_empty() {
            return Err("age needs at least one recipient (age1...): segments would go up unencrypted".into());
        }
        let ours = |r: &age::x25519::Recipient| identities.iter().any(|i| i.to_public() == *r);
        if !recipients.iter().any(ours) {
            return Err("age needs the identity (AGE-SECRET-KEY-1...) of at least one of its recipients: sluice reads back what it writes, to compact it and to restore".into());
        }
        Ok(Keys { recipients, identities })
    }

    /// Seal the plaintext segment read from `plain` into `out`. Returns
    /// the plaintext's header.
    pub fn seal(&self, mut plain: impl Read, mut out: impl Write) -> Result<Header, FormatError> {
        let mut head = [0u8; HEADER_SIZE];
        plain.read_exact(&mut head)?;
        let header = Header::decode(&head)?;
        out.write_all(&outer_header(&header))?;
        let recipients = self.recipients.iter().map(|r| r as &dyn age::Recipient);
        let encryptor = age::Encryptor::with_recipients(recipients)
            .map_err(|e| FormatError::Io(std::io::Error::other(format!("age: {e}"))))?;
        let mut w = encryptor.wrap_output(out)?;
        w.write_all(&head)?;
        std::io::copy(&mut plain, &mut w)?;
        w.finish()?;
        Ok(header)
    }

    /// Open the sealed object read from `sealed` into `out` (the
    /// plaintext segment, still to be verified by its reader). Returns
    /// the plaintext's header, checked against the outer one.
    pub fn open(&self, sealed: impl BufRead, mut out: impl Write) -> Result<Header, OpenError> {
        let (inner, head, mut reader) = self.decrypting(sealed)?;
        out.write_all(&head)?;
        std::io::copy(&mut reader, &mut out).map_err(|e| damaged(&e))?;
        Ok(inner)
    }

    /// The plaintext header of a sealed object from its first
    /// `PEEK_BYTES` (or all of it, if shorter).
    pub fn peek(&self, start: &[u8]) -> Result<Header, OpenError> {
        self.decrypting(start).map(|(h, _, _)| h)
    }

    fn decrypting<R: BufRead>(
        &self,
        mut sealed: R,
    ) -> Result<(Header, [u8; HEADER_SIZE], age::stream::StreamReader<R>), OpenError> {
        let mut outer = [0u8; HEADER_SIZE];
        sealed.read_exact(&mut outer).map_err(|e| damaged(&e))?;
        let outer = decode_outer(&outer).map_err(|e| OpenError::Corrupt(e.to_string()))?;
        let identities = self.identities.iter().map(|i| i as &dyn age::Identity);
        let decryptor = age::Decryptor::new_buffered(sealed).map_err(decrypt_error)?;
        let mut reader = decryptor.decrypt(identities).map_err(decrypt_error)?;
        let mut head = [0u8; HEADER_SIZE];
        reader.read_exact(&mut head).map_err(|e| damaged(&e))?;
        let inner = Header::decode(&head).map_err(|e| OpenError::Corrupt(format!("its decrypted header: {e}")))?;
        if outer_header(&inner) != outer.encode() {
            return Err(OpenError::Corrupt("its outer header does not match the segment inside (swapped?)".into()));
        }
        Ok((inner, head, reader))
    }
}

/// Whether `start` (an object's first bytes) is a sealed segment.
pub fn is_sealed(start: &[u8]) -> bool {
    start.len() >= 12
        && start[..6] == super::format::MAGIC
        && u32::from_be_bytes([start[8], start[9], start[10], start[11]]) & FLAG_ENCRYPTED != 0
}

/// The header a sealed object shows: what its name says (TXIDs) plus page
/// size, version and time; sizes, counts and checksums stay inside.
fn outer_header(inner: &Header) -> [u8; HEADER_SIZE] {
    let outer = Header {
        version: inner.version,
        flags: FLAG_ENCRYPTED,
        page_size: inner.page_size,
        min_txid: inner.min_txid,
        max_txid: inner.max_txid,
        timestamp_ms: inner.timestamp_ms,
        ..Header::default()
    };
    outer.encode()
}

/// Decode a sealed object's outer header.
pub fn decode_outer(b: &[u8]) -> Result<Header, FormatError> {
    let h = Header::decode_any(b)?;
    if h.flags != FLAG_ENCRYPTED {
        return Err(FormatError::Corrupt(format!("not an encrypted segment (flags {:#x})", h.flags)));
    }
    Ok(h)
}

fn decrypt_error(e: age::DecryptError) -> OpenError {
    match e {
        age::DecryptError::NoMatchingKeys => OpenError::NoMatchingKey,
        age::DecryptError::Io(io) => damaged(&io),
        other => OpenError::Corrupt(format!("its age encryption does not verify: {other}")),
    }
}

/// age reports a failed authentication tag (a flipped bit, a cut-off
/// end) as an I/O error of kind InvalidData or UnexpectedEof.
fn damaged(e: &std::io::Error) -> OpenError {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::InvalidData | K::UnexpectedEof => OpenError::Corrupt(format!("its encrypted bytes do not verify: {e}")),
        _ => OpenError::Io(std::io::Error::new(e.kind(), e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{SegmentReader, SegmentWriter};

    fn keypair() -> (String, String) {
        use age::secrecy::ExposeSecret;
        let id = age::x25519::Identity::generate();
        (id.to_public().to_string(), id.to_string().expose_secret().to_string())
    }

    fn segment(pages: u32) -> Vec<u8> {
        let h =
            Header { page_size: 4096, min_txid: 3, max_txid: 5, timestamp_ms: 1_700_000_000_000, ..Header::default() };
        let mut w = SegmentWriter::new(std::io::Cursor::new(Vec::new()), h).unwrap();
        for p in 1..=pages {
            let page: Vec<u8> = (0..4096u32).map(|i| (i * 7 + p) as u8).collect();
            w.add_page(p, &page).unwrap();
        }
        w.finish(pages, 99).unwrap().0.into_inner()
    }

    fn sealed(keys: &Keys, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        keys.seal(plain, &mut out).unwrap();
        out
    }

    #[test]
    fn a_sealed_segment_opens_to_the_same_bytes_and_shows_no_page() {
        let (r, i) = keypair();
        let keys = Keys::parse(&[r], &[i]).unwrap();
        let plain = segment(40);
        let s = sealed(&keys, &plain);
        assert!(is_sealed(&s) && !is_sealed(&plain));
        let page: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
        assert!(!s.windows(64).any(|w| w == &page[..64]), "a page's bytes appear in the sealed object");
        let mut back = Vec::new();
        let header = keys.open(&s[..], &mut back).unwrap();
        assert_eq!(back, plain);
        assert_eq!((header.min_txid, header.max_txid), (3, 5));
        SegmentReader::from_bytes(back).unwrap();
        // Without keys, a reader refuses it by saying what it is.
        let err = Header::decode(&s[..HEADER_SIZE]).unwrap_err();
        assert!(err.to_string().contains("encrypted"), "{err}");
        assert_eq!(keys.peek(&s[..(PEEK_BYTES as usize).min(s.len())]).unwrap(), header);
    }

    /// An upload retried after a lost answer meets its own first attempt:
    /// the ciphertexts differ (age is randomised) but the headers peeked
    /// inside are equal, and another segment's are not.
    #[test]
    fn a_retried_upload_is_recognised_by_the_header_inside() {
        let (r, i) = keypair();
        let keys = Keys::parse(&[r], &[i]).unwrap();
        let plain = segment(30);
        let (first, second) = (sealed(&keys, &plain), sealed(&keys, &plain));
        assert_ne!(first, second);
        let peek = |s: &[u8]| keys.peek(&s[..(PEEK_BYTES as usize).min(s.len())]).unwrap();
        assert_eq!(peek(&first), peek(&second));
        assert_ne!(peek(&first), peek(&sealed(&keys, &segment(31))));
    }

    #[test]
    fn damage_anywhere_is_refused_never_opened_wrong() {
        let (r, i) = keypair();
        let keys = Keys::parse(&[r], &[i]).unwrap();
        let s = sealed(&keys, &segment(40));
        for at in [10, 100, 400, s.len() / 2, s.len() - 1] {
            let mut bad = s.clone();
            bad[at] ^= 0x20;
            assert!(keys.open(&bad[..], &mut Vec::new()).is_err(), "a flipped bit at {at} opened");
        }
        for cut in [50, 300, s.len() - 1] {
            assert!(keys.open(&s[..cut], &mut Vec::new()).is_err(), "cut at {cut} opened");
        }
    }

    #[test]
    fn a_swapped_outer_header_or_a_foreign_key_is_refused() {
        let (r, i) = keypair();
        let keys = Keys::parse(std::slice::from_ref(&r), &[i]).unwrap();
        let mut s = sealed(&keys, &segment(3));
        let mut h = decode_outer(&s[..HEADER_SIZE]).unwrap();
        h.max_txid = 9;
        s[..HEADER_SIZE].copy_from_slice(&h.encode());
        let err = keys.open(&s[..], &mut Vec::new()).unwrap_err();
        assert!(matches!(err, OpenError::Corrupt(_)), "{err}");
        let (r2, i2) = keypair();
        let other = Keys::parse(&[r2], &[i2]).unwrap();
        let s = sealed(&keys, &segment(3));
        assert!(matches!(other.open(&s[..], &mut Vec::new()), Err(OpenError::NoMatchingKey)));
    }

    #[test]
    fn rotation_reads_old_and_new_with_both_identities() {
        let ((r1, i1), (r2, i2)) = (keypair(), keypair());
        let old = Keys::parse(&[r1], std::slice::from_ref(&i1)).unwrap();
        let new = Keys::parse(&[r2], &[i1, i2]).unwrap();
        let plain = segment(5);
        for s in [sealed(&old, &plain), sealed(&new, &plain)] {
            let mut back = Vec::new();
            new.open(&s[..], &mut back).unwrap();
            assert_eq!(back, plain);
        }
    }

    #[test]
    fn bad_keys_are_named_by_position_never_echoed() {
        let (r, i) = keypair();
        let secret = format!("{}x", &i[..i.len() - 1]);
        let err = Keys::parse(std::slice::from_ref(&r), std::slice::from_ref(&secret)).unwrap_err();
        assert!(err.contains("identities[0]") && !err.contains(&secret[15..]), "{err}");
        let err = Keys::parse(&[], std::slice::from_ref(&i)).unwrap_err();
        assert!(err.contains("recipient"), "{err}");
        let (other, _) = keypair();
        let err = Keys::parse(&[other], std::slice::from_ref(&i)).unwrap_err();
        assert!(err.contains("identity") && !err.contains(&i[15..]), "{err}");
        let keys = Keys::parse(&[r], std::slice::from_ref(&i)).unwrap();
        assert!(!format!("{keys:?}").contains(&i[15..]));
    }
}
