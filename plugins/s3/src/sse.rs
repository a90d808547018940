//! Server-side encryption requested by the replica's settings, as the
//! headers each S3 request needs: SSE-C (`sse-customer-key`, the store
//! encrypts with a key we send on every request that touches the object's
//! data) or SSE-KMS (`sse-kms-key-id`, the store encrypts with a KMS key it
//! holds, so only writes name it).

use crate::encode::{base64, base64_decode};
use md5::{Digest, Md5};
use sluice_sdk::{Config, Error};

/// The setting holding the SSE-C key.
pub const CUSTOMER_KEY_SETTING: &str = "sse-customer-key";
/// The setting naming the SSE-C algorithm.
pub const CUSTOMER_ALGORITHM_SETTING: &str = "sse-customer-algorithm";
/// The setting naming the KMS key.
pub const KMS_KEY_SETTING: &str = "sse-kms-key-id";

/// The only SSE-C algorithm S3 defines, and Litestream's default.
pub const DEFAULT_CUSTOMER_ALGORITHM: &str = "AES256";
/// SSE-C keys are AES-256 keys.
pub const CUSTOMER_KEY_LEN: usize = 32;
/// `x-amz-server-side-encryption` for SSE-KMS.
pub const KMS_ALGORITHM: &str = "aws:kms";

pub const HEADER_CUSTOMER_ALGORITHM: &str = "x-amz-server-side-encryption-customer-algorithm";
pub const HEADER_CUSTOMER_KEY: &str = "x-amz-server-side-encryption-customer-key";
pub const HEADER_CUSTOMER_KEY_MD5: &str = "x-amz-server-side-encryption-customer-key-md5";
pub const HEADER_SSE: &str = "x-amz-server-side-encryption";
pub const HEADER_KMS_KEY_ID: &str = "x-amz-server-side-encryption-aws-kms-key-id";

/// How new objects are encrypted, and what reading them back takes.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Sse {
    /// The bucket's default, whatever it is: nothing is sent.
    #[default]
    None,
    /// SSE-C: the key travels with every data request.
    Customer {
        algorithm: String,
        /// The raw key, Base64-encoded as the header carries it.
        key_b64: String,
        /// Base64 of the raw key's MD5, so the store can check the key
        /// arrived intact before encrypting with it.
        key_md5_b64: String,
    },
    /// SSE-KMS with the named key.
    Kms { key_id: String },
}

// The customer key is a secret: `S3Config` is logged at debug level.
impl std::fmt::Debug for Sse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sse::None => f.write_str("None"),
            Sse::Customer { algorithm, .. } => f
                .debug_struct("Customer")
                .field("algorithm", algorithm)
                .finish_non_exhaustive(),
            Sse::Kms { key_id } => f.debug_struct("Kms").field("key_id", key_id).finish(),
        }
    }
}

/// Read the encryption settings. Only settings, never the URL's query:
/// a key in a URL ends up in logs and shell history.
pub fn resolve(config: &Config) -> Result<Sse, Error> {
    let non_empty = |name: &str| config.get(name).filter(|v| !v.is_empty());
    let customer_key = non_empty(CUSTOMER_KEY_SETTING);
    let algorithm = non_empty(CUSTOMER_ALGORITHM_SETTING);
    let kms_key = non_empty(KMS_KEY_SETTING);
    match (customer_key, kms_key) {
        (Some(_), Some(_)) => Err(Error::invalid_config(format!(
            "`{CUSTOMER_KEY_SETTING}` and `{KMS_KEY_SETTING}` cannot both be set: \
             an object is encrypted either with your key (SSE-C) or with a KMS key (SSE-KMS)"
        ))),
        (Some(key), None) => {
            let raw = customer_key_bytes(key)?;
            Ok(Sse::Customer {
                algorithm: algorithm.unwrap_or(DEFAULT_CUSTOMER_ALGORITHM).to_string(),
                key_b64: base64(&raw),
                key_md5_b64: base64(&Md5::digest(&raw)),
            })
        }
        (None, kms) => {
            // An algorithm without a key would silently encrypt nothing.
            if algorithm.is_some() {
                return Err(Error::invalid_config(format!(
                    "`{CUSTOMER_ALGORITHM_SETTING}` is set but `{CUSTOMER_KEY_SETTING}` is not"
                )));
            }
            Ok(kms.map_or(Sse::None, |id| Sse::Kms { key_id: id.to_string() }))
        }
    }
}

/// The raw 32-byte key from the setting. Litestream hands the configured
/// string to S3 as the key, so both spellings people use are accepted:
/// exactly 32 bytes are the key itself; otherwise the value must be the
/// Base64 of 32 bytes (what `openssl rand -base64 32` prints). The two
/// cannot be confused: Base64 of 32 bytes is 44 characters long, and
/// 32 Base64 characters decode to 24 bytes.
fn customer_key_bytes(value: &str) -> Result<Vec<u8>, Error> {
    if value.len() == CUSTOMER_KEY_LEN {
        return Ok(value.as_bytes().to_vec());
    }
    match base64_decode(value.trim()) {
        Some(raw) if raw.len() == CUSTOMER_KEY_LEN => Ok(raw),
        // The value is a secret: say what is wrong with it, not what it is.
        _ => Err(Error::invalid_config(format!(
            "`{CUSTOMER_KEY_SETTING}` must be a {CUSTOMER_KEY_LEN}-byte key, either as is or \
             Base64-encoded (44 characters, e.g. from `openssl rand -base64 {CUSTOMER_KEY_LEN}`); \
             the value given is {} characters and neither",
            value.len()
        ))),
    }
}

impl Sse {
    /// Headers for requests that create an object: PutObject and
    /// CreateMultipartUpload.
    pub fn write_headers(&self) -> Vec<(String, String)> {
        match self {
            Sse::Kms { key_id } => vec![
                (HEADER_SSE.to_string(), KMS_ALGORITHM.to_string()),
                (HEADER_KMS_KEY_ID.to_string(), key_id.clone()),
            ],
            _ => self.data_headers(),
        }
    }

    /// Headers for requests that read or send an object's data without
    /// creating it: GetObject, HeadObject, UploadPart. Only SSE-C needs
    /// any (S3 cannot decrypt without the key, and each part is encrypted
    /// on arrival); KMS objects decrypt with the key the store holds, and
    /// S3 rejects the KMS headers on these requests.
    pub fn data_headers(&self) -> Vec<(String, String)> {
        match self {
            Sse::Customer {
                algorithm,
                key_b64,
                key_md5_b64,
            } => vec![
                (HEADER_CUSTOMER_ALGORITHM.to_string(), algorithm.clone()),
                (HEADER_CUSTOMER_KEY.to_string(), key_b64.clone()),
                (HEADER_CUSTOMER_KEY_MD5.to_string(), key_md5_b64.clone()),
            ],
            Sse::None | Sse::Kms { .. } => Vec::new(),
        }
    }
}

#[cfg(test)]
#[path = "sse_tests.rs"]
mod tests;
