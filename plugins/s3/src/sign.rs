//! SigV4 request signing with AWS's own signer, configured for S3 and for
//! the strictest S3-compatible stores: plain signed payloads, no
//! `aws-chunked`, no `x-amz-checksum-*` headers.

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, UriPathNormalizationMode,
    sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use sluice_sdk::Error;
use std::time::SystemTime;

/// SigV4 service name for S3.
const SERVICE: &str = "s3";
/// Names the credentials' origin inside the AWS types (never shown to users).
const PROVIDER_NAME: &str = "sluice-settings";

/// The payload hash for requests whose body is not hashed.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

pub struct Signer {
    identity: Identity,
    region: String,
}

// Holds the secret: never print it.
impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub fn new(access_key_id: &str, secret: &str, session_token: Option<&str>, region: &str) -> Self {
        let credentials = Credentials::new(
            access_key_id,
            secret,
            session_token.map(str::to_string),
            None,
            PROVIDER_NAME,
        );
        Signer {
            identity: credentials.into(),
            region: region.to_string(),
        }
    }

    /// The headers to add to a request so the store accepts it: the
    /// signature, its date, the payload hash and any session token.
    /// `url` must already be percent-encoded exactly as it will be sent;
    /// `payload_hash` is the body's lowercase hex SHA-256 or
    /// [`UNSIGNED_PAYLOAD`].
    pub fn sign(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        payload_hash: &str,
    ) -> Result<Vec<(String, String)>, Error> {
        let mut settings = SigningSettings::default();
        // S3 signs the path as sent: no double encoding, no `..` folding.
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        // Adds `x-amz-content-sha256`, which S3 requires on every request.
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name(SERVICE)
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| Error::permanent(format!("cannot set up request signing: {e}")))?
            .into();
        let body = if payload_hash == UNSIGNED_PAYLOAD {
            SignableBody::UnsignedPayload
        } else {
            SignableBody::Precomputed(payload_hash.to_string())
        };
        let request = SignableRequest::new(method, url, headers.iter().map(|(k, v)| (k.as_str(), v.as_str())), body)
            .map_err(|e| Error::invalid_config(format!("cannot sign a request to {url}: {e}")))?;
        let (instructions, _signature) = sign(request, &params)
            .map_err(|e| Error::invalid_config(format!("cannot sign a request to {url}: {e}")))?
            .into_parts();
        let (added, _query) = instructions.into_parts();
        Ok(added
            .into_iter()
            .map(|h| (h.name().to_string(), h.value().to_string()))
            .collect())
    }
}
