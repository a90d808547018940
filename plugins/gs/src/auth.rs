//! Credentials: the JSON file Google's libraries read for Application
//! Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS`), as the host
//! passes it in `credentials-json`, and the token request each kind makes.
//!
//! - `service_account`: a JWT (RS256 over the header and claims, signed
//!   with the file's PKCS#8 private key) sent to `token_uri` as the
//!   `urn:ietf:params:oauth:grant-type:jwt-bearer` grant (Google's
//!   "OAuth 2.0 for Server to Server Applications").
//! - `authorized_user` (`gcloud auth application-default login`): the
//!   refresh token sent to `token_uri` as the `refresh_token` grant.
//!
//! Both answer `{"access_token": ..., "expires_in": 3599, ...}`; requests
//! then carry `Authorization: Bearer TOKEN`.

use crate::{DEFAULT_TOKEN_URI, SCOPE};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rand_core::CryptoRngCore;
use rsa::RsaPrivateKey;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use serde::Deserialize;
use sha2::Sha256;
use sluice_sdk::Error;

/// How long the signed assertion is valid: Google's maximum, an hour (the
/// token it buys lasts as long, far beyond an instance's batch).
pub const ASSERTION_LIFETIME_SECS: u64 = 3600;

/// A token's lifetime when the answer does not say (Google's is an hour).
pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 3600;
/// Refresh a token this long before it expires: a request sent just
/// before the end must not arrive with an expired one.
pub const TOKEN_REFRESH_MARGIN_SECS: u64 = 300;

/// The access token of an instance, and when to fetch the next.
#[derive(Default)]
pub struct TokenCache {
    token: Option<(String, u64)>,
}

impl TokenCache {
    /// The `Authorization` value, while the token is fresh at `now_secs`.
    pub fn fresh(&self, now_secs: u64) -> Option<&str> {
        self.token.as_ref().filter(|(_, refresh_at)| now_secs < *refresh_at).map(|(bearer, _)| bearer.as_str())
    }

    /// Keep a token fetched at `now_secs` that lasts `lifetime_secs`; its
    /// `Authorization` value.
    pub fn store(&mut self, token: &str, lifetime_secs: u64, now_secs: u64) -> String {
        let bearer = format!("Bearer {token}");
        let refresh_at = now_secs + lifetime_secs.saturating_sub(TOKEN_REFRESH_MARGIN_SECS);
        self.token = Some((bearer.clone(), refresh_at));
        bearer
    }
}

/// Form values: everything but RFC 3986's unreserved is escaped.
const FORM: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The fields of a credentials file that matter here.
#[derive(Deserialize)]
struct File {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    token_uri: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
}

/// Who the plugin is to Google.
pub enum Credential {
    ServiceAccount {
        email: String,
        key_id: Option<String>,
        key: Box<RsaPrivateKey>,
        token_uri: String,
    },
    AuthorizedUser {
        client_id: String,
        client_secret: String,
        refresh_token: String,
        token_uri: String,
    },
    /// The VM's own service account, whose tokens the GCE metadata server
    /// (`host[:port]`) hands out: Google's last resort when no key is
    /// given, as on GCE, GKE and Cloud Run.
    Metadata {
        host: String,
    },
}

/// The metadata server's token path for the VM's default service account.
const METADATA_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

// Never print a key or a token: only who they belong to.
impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({})", self.describe())
    }
}

fn required(value: Option<String>, field: &str, kind: &str) -> Result<String, Error> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Error::invalid_config(format!("the Google credentials file (type {kind}) has no `{field}`")))
}

impl Credential {
    /// Read a credentials file's text.
    pub fn from_json(json: &str) -> Result<Credential, Error> {
        let file: File = serde_json::from_str(json).map_err(|e| {
            Error::invalid_config(format!(
                "the Google credentials (credentials-json / GOOGLE_APPLICATION_CREDENTIALS) are not a JSON key file: {e}"
            ))
        })?;
        let token_uri = file.token_uri.filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_TOKEN_URI.to_string());
        match file.kind.as_deref() {
            Some("service_account") => {
                let email = required(file.client_email, "client_email", "service_account")?;
                let pem = required(file.private_key, "private_key", "service_account")?;
                let key = RsaPrivateKey::from_pkcs8_pem(&pem)
                    .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&pem))
                    .map_err(|e| {
                        Error::invalid_config(format!(
                            "the private_key of service account {email} is not an RSA key in PEM: {e}"
                        ))
                    })?;
                Ok(Credential::ServiceAccount { email, key_id: file.private_key_id, key: Box::new(key), token_uri })
            }
            Some("authorized_user") => Ok(Credential::AuthorizedUser {
                client_id: required(file.client_id, "client_id", "authorized_user")?,
                client_secret: required(file.client_secret, "client_secret", "authorized_user")?,
                refresh_token: required(file.refresh_token, "refresh_token", "authorized_user")?,
                token_uri,
            }),
            other => Err(Error::invalid_config(format!(
                "Google credentials of type {:?} are not supported: use a service account key (type service_account) or `gcloud auth application-default login` (type authorized_user)",
                other.unwrap_or("(none)")
            ))),
        }
    }

    pub fn token_uri(&self) -> String {
        match self {
            Credential::ServiceAccount { token_uri, .. } | Credential::AuthorizedUser { token_uri, .. } => {
                token_uri.clone()
            }
            Credential::Metadata { host } => format!("http://{host}{METADATA_TOKEN_PATH}"),
        }
    }

    /// Whose credentials these are, for messages (no secret in it).
    pub fn describe(&self) -> String {
        match self {
            Credential::ServiceAccount { email, .. } => format!("service account {email}"),
            Credential::AuthorizedUser { client_id, .. } => format!("user credentials of OAuth client {client_id}"),
            Credential::Metadata { host } => format!("the VM's service account (metadata server {host})"),
        }
    }

    /// The `application/x-www-form-urlencoded` body of the token request
    /// at `now_secs` (Unix time).
    pub fn token_request(&self, now_secs: u64, rng: &mut impl CryptoRngCore) -> Result<String, Error> {
        let form = |pairs: &[(&str, &str)]| {
            pairs.iter().map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, FORM))).collect::<Vec<_>>().join("&")
        };
        Ok(match self {
            Credential::ServiceAccount { email, key_id, key, token_uri } => {
                let assertion = jwt(email, key_id.as_deref(), token_uri, key, now_secs, rng)?;
                form(&[("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", &assertion)])
            }
            Credential::AuthorizedUser { client_id, client_secret, refresh_token, .. } => form(&[
                ("grant_type", "refresh_token"),
                ("client_id", client_id),
                ("client_secret", client_secret),
                ("refresh_token", refresh_token),
            ]),
            Credential::Metadata { .. } => String::new(),
        })
    }
}

/// A service account's signed assertion: `HEADER.CLAIMS.SIGNATURE`, each
/// base64url without padding, RS256 (PKCS#1 v1.5 with SHA-256, blinded
/// by `rng`).
pub fn jwt(
    email: &str,
    key_id: Option<&str>,
    audience: &str,
    key: &RsaPrivateKey,
    now_secs: u64,
    rng: &mut impl CryptoRngCore,
) -> Result<String, Error> {
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = key_id {
        header["kid"] = kid.into();
    }
    let claims = serde_json::json!({
        "iss": email,
        "scope": SCOPE,
        "aud": audience,
        "iat": now_secs,
        "exp": now_secs + ASSERTION_LIFETIME_SECS,
    });
    let signed =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signer = SigningKey::<Sha256>::new(key.clone());
    let signature = signer
        .try_sign_with_rng(rng, signed.as_bytes())
        .map_err(|e| Error::permanent(format!("cannot sign the token request of {email}: {e}")))?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes())))
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    expires_in: Option<u64>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The access token of a token endpoint's answer, and how many seconds
/// it lasts.
pub fn access_token(body: &[u8]) -> Result<(String, u64), String> {
    let answer: TokenAnswer = serde_json::from_slice(body).map_err(|e| format!("not a token answer: {e}"))?;
    let token =
        answer.access_token.filter(|t| !t.is_empty()).ok_or_else(|| "the answer has no access_token".to_string())?;
    Ok((token, answer.expires_in.unwrap_or(DEFAULT_TOKEN_LIFETIME_SECS)))
}

/// What a token endpoint's error answer says (`error: description`).
pub fn token_error(body: &[u8]) -> Option<String> {
    let answer: TokenAnswer = serde_json::from_slice(body).ok()?;
    let error = answer.error?;
    Some(match answer.error_description {
        Some(d) if !d.is_empty() => format!("{error}: {d}"),
        _ => error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    use rsa::signature::Verifier;
    use std::sync::OnceLock;

    /// A 2048-bit key, as Google issues, generated once for these tests.
    fn key() -> &'static RsaPrivateKey {
        static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
        KEY.get_or_init(|| RsaPrivateKey::new(&mut OsRng, 2048).unwrap())
    }

    fn service_account_json(token_uri: Option<&str>) -> String {
        let pem = key().to_pkcs8_pem(LineEnding::LF).unwrap();
        let mut json = serde_json::json!({
            "type": "service_account",
            "project_id": "p",
            "private_key_id": "kid-1",
            "private_key": pem.as_str(),
            "client_email": "backup@p.iam.gserviceaccount.com",
        });
        if let Some(uri) = token_uri {
            json["token_uri"] = uri.into();
        }
        json.to_string()
    }

    fn part(jwt: &str, i: usize) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(jwt.split('.').nth(i).unwrap()).unwrap()
    }

    #[test]
    fn a_service_accounts_jwt_verifies_with_its_public_key() {
        let c = Credential::from_json(&service_account_json(Some("http://127.0.0.1:9/token"))).unwrap();
        assert_eq!(c.token_uri(), "http://127.0.0.1:9/token");
        assert_eq!(format!("{c:?}"), "Credential(service account backup@p.iam.gserviceaccount.com)");
        let body = c.token_request(1_800_000_000, &mut OsRng).unwrap();
        let assertion =
            body.strip_prefix("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=");
        let jwt = assertion.unwrap();
        assert_eq!(jwt.split('.').count(), 3);
        let header: serde_json::Value = serde_json::from_slice(&part(jwt, 0)).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "kid-1"}));
        let claims: serde_json::Value = serde_json::from_slice(&part(jwt, 1)).unwrap();
        assert_eq!(claims["iss"], "backup@p.iam.gserviceaccount.com");
        assert_eq!(claims["aud"], "http://127.0.0.1:9/token");
        assert_eq!(claims["scope"], SCOPE);
        assert_eq!((claims["iat"].as_u64(), claims["exp"].as_u64()), (Some(1_800_000_000), Some(1_800_003_600)));
        let signed = &jwt[..jwt.rfind('.').unwrap()];
        let signature = Signature::try_from(part(jwt, 2).as_slice()).unwrap();
        let verifier = VerifyingKey::<Sha256>::new(key().to_public_key());
        verifier.verify(signed.as_bytes(), &signature).unwrap();
        // Another message does not verify: the check can fail.
        assert!(verifier.verify(b"something else", &signature).is_err());
    }

    #[test]
    fn the_default_token_uri_and_a_refresh_token() {
        let c = Credential::from_json(&service_account_json(None)).unwrap();
        assert_eq!(c.token_uri(), DEFAULT_TOKEN_URI);
        let user = r#"{"type":"authorized_user","client_id":"cid.apps","client_secret":"s&x","refresh_token":"1//r"}"#;
        let c = Credential::from_json(user).unwrap();
        assert_eq!(
            c.token_request(0, &mut OsRng).unwrap(),
            "grant_type=refresh_token&client_id=cid.apps&client_secret=s%26x&refresh_token=1%2F%2Fr"
        );
        assert!(!format!("{c:?}").contains("s&x"));
    }

    #[test]
    fn bad_files_are_named() {
        let e = Credential::from_json(r#"{"type":"external_account"}"#).unwrap_err();
        assert!(e.message().contains("external_account"), "{e:?}");
        let e = Credential::from_json(r#"{"type":"service_account","client_email":"a@b"}"#).unwrap_err();
        assert!(e.message().contains("private_key"), "{e:?}");
        let bad_pem = r#"{"type":"service_account","client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}"#;
        let e = Credential::from_json(bad_pem).unwrap_err();
        assert!(e.message().contains("a@b") && e.message().contains("RSA"), "{e:?}");
    }

    #[test]
    fn a_token_is_refreshed_before_it_expires() {
        let mut cache = TokenCache::default();
        assert_eq!(cache.fresh(1000), None);
        assert_eq!(cache.store("ya29.a", 3599, 1000), "Bearer ya29.a");
        assert_eq!(cache.fresh(1000 + 3599 - TOKEN_REFRESH_MARGIN_SECS - 1), Some("Bearer ya29.a"));
        assert_eq!(cache.fresh(1000 + 3599 - TOKEN_REFRESH_MARGIN_SECS), None);
        // A token shorter than the margin is used for the call that got it only.
        cache.store("ya29.b", 60, 5000);
        assert_eq!(cache.fresh(5000), None);
    }

    #[test]
    fn token_answers() {
        let ok = br#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#;
        assert_eq!(access_token(ok).unwrap(), ("ya29.x".to_string(), 3599));
        assert_eq!(access_token(br#"{"access_token":"t"}"#).unwrap().1, DEFAULT_TOKEN_LIFETIME_SECS);
        let refused = br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#;
        assert!(access_token(refused).is_err());
        assert_eq!(token_error(refused).as_deref(), Some("invalid_grant: Invalid JWT Signature."));
        assert_eq!(token_error(b"<html>"), None);
    }
}
