//! Block ids of an upload. The upload id itself is the SDK's
//! (`sluice_sdk::upload::UploadId`: nonce, precondition and metadata,
//! which Azure applies when the block list is committed).

use base64::Engine;
pub use sluice_sdk::upload::UploadId as Upload;

/// The block id of a part: one length for every block of every upload
/// (Azure requires it per blob), base64 as the API wants.
pub fn block_id(upload: &Upload, part_number: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{:016x}-{part_number:06}", upload.nonce))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::Precondition;

    #[test]
    fn block_ids_have_one_length() {
        let a = Upload { nonce: 1, precondition: Precondition::None, metadata: vec![] };
        let b = Upload { nonce: u64::MAX, ..a.clone() };
        assert_eq!(block_id(&a, 1).len(), block_id(&b, 50_000).len());
        assert_ne!(block_id(&a, 1), block_id(&a, 2));
    }
}
