//! Multipart upload handles. The contract gives the precondition only to
//! `create-upload`, but S3 checks it on CompleteMultipartUpload, and a
//! store instance must not rely on living until then. So the precondition
//! travels inside the upload id the host hands back.

use sluice_sdk::Precondition;

/// Mark ids carrying a precondition. No store's upload id starts with
/// these, so plain ids pass through unchanged.
const IF_ABSENT: &str = "sluice-if-absent:";
const IF_MATCH: &str = "sluice-if-match:";

/// The id given to the host.
pub fn encode(s3_upload_id: &str, precondition: &Precondition) -> String {
    match precondition {
        Precondition::None => s3_upload_id.to_string(),
        Precondition::IfAbsent => format!("{IF_ABSENT}{s3_upload_id}"),
        // The etag goes first, hex-encoded, so no etag character can be
        // mistaken for the separator.
        Precondition::IfMatch(etag) => {
            let hex: String = etag.bytes().map(|b| format!("{b:02x}")).collect();
            format!("{IF_MATCH}{hex}:{s3_upload_id}")
        }
    }
}

/// The S3 upload id and the precondition, from the host's id.
pub fn decode(id: &str) -> (&str, Precondition) {
    if let Some(rest) = id.strip_prefix(IF_ABSENT) {
        return (rest, Precondition::IfAbsent);
    }
    if let Some((hex, rest)) = id.strip_prefix(IF_MATCH).and_then(|r| r.split_once(':')) {
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect();
        if let Some(etag) = bytes.and_then(|b| String::from_utf8(b).ok()) {
            return (rest, Precondition::IfMatch(etag));
        }
    }
    (id, Precondition::None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for p in [
            Precondition::None,
            Precondition::IfAbsent,
            Precondition::IfMatch("9b2c:f5-2".into()),
        ] {
            let id = encode("VXBsb2FkIElE.x-y_z", &p);
            assert_eq!(decode(&id), ("VXBsb2FkIElE.x-y_z", p));
        }
        assert_eq!(decode("plain:id"), ("plain:id", Precondition::None));
    }
}
