//! S3 answers mapped onto the contract's errors, so the host knows whether
//! to back off, re-read, or stop and tell an operator what to fix.

use crate::xml;
use sluice_sdk::Error;

/// What a failed request was doing, for messages an operator can act on.
pub struct Context<'a> {
    /// The operation, e.g. `put` or `list`.
    pub op: &'a str,
    /// The object key or prefix concerned (full, with the replica prefix).
    pub target: &'a str,
    pub bucket: &'a str,
    /// Named in access errors so operators know which credentials to check;
    /// the secret never reaches this struct.
    pub access_key_id: &'a str,
}

/// Cap on how much of a non-XML error body goes into a message: enough to
/// recognise a proxy's error page, not enough to flood a log.
const MAX_BODY_IN_MESSAGE: usize = 200;

/// Map a non-2xx response.
pub fn from_response(status: u16, headers: &[(String, String)], body: &[u8], ctx: &Context) -> Error {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let mut parsed = xml::error(body).unwrap_or_default();
    if parsed.message.is_empty() && parsed.code.is_empty() && !body.is_empty() {
        let text = String::from_utf8_lossy(body);
        parsed.message = text
            .chars()
            .take(MAX_BODY_IN_MESSAGE)
            .collect::<String>()
            .trim()
            .to_string();
    }
    if parsed.region.is_none() {
        parsed.region = header("x-amz-bucket-region").map(str::to_string);
    }
    let retry_after_ms = header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|secs| secs.saturating_mul(1000));
    classify(status, &parsed, retry_after_ms, ctx)
}

/// Map a per-key error from DeleteObjects (reported inside a 200 answer).
pub fn from_code(code: &str, message: &str, ctx: &Context) -> Error {
    let parsed = xml::S3Error {
        code: code.to_string(),
        message: message.to_string(),
        region: None,
    };
    // The status such a code would come with, so one table serves both.
    let status = match code {
        "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" => 403,
        "NoSuchKey" | "NoSuchBucket" | "NoSuchUpload" => 404,
        "SlowDown" => 503,
        "InternalError" => 500,
        _ => 400,
    };
    classify(status, &parsed, None, ctx)
}

fn classify(status: u16, e: &xml::S3Error, retry_after_ms: Option<u64>, ctx: &Context) -> Error {
    let Context {
        op,
        target,
        bucket,
        access_key_id,
    } = ctx;
    let detail = describe(status, e);
    let what = format!("S3 {op} of {target:?} in bucket {bucket:?} failed: {detail}");
    match (status, e.code.as_str()) {
        (_, "SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded" | "TooManyRequests")
        | (429, _) => Error::throttled(what, retry_after_ms),
        (_, "NoSuchBucket") => Error::invalid_config(format!(
            "{what}: bucket {bucket:?} does not exist; create the bucket or fix the bucket name in the replica URL"
        )),
        (_, "InvalidAccessKeyId") => Error::access_denied(format!(
            "{what}: the store does not know access key id {access_key_id:?}; check `access-key-id`"
        )),
        (_, "SignatureDoesNotMatch") => Error::access_denied(format!(
            "{what}: the signature made with access key id {access_key_id:?} was refused; \
             check `secret-access-key` (and `region`)"
        )),
        (_, "RequestTimeTooSkewed") => Error::access_denied(format!(
            "{what}: this machine's clock is too far off for request signing; synchronise it"
        )),
        (_, "AuthorizationHeaderMalformed" | "PermanentRedirect" | "IllegalLocationConstraintException") | (301, _) => {
            Error::invalid_config(match &e.region {
                Some(r) => format!("{what}: the bucket is in region {r}; set region={r}"),
                None => format!("{what}: check `region` and `endpoint`"),
            })
        }
        (403, _) | (_, "AccessDenied" | "AllAccessDisabled" | "AccountProblem") => Error::access_denied(format!(
            "{what}: access key id {access_key_id:?} is not allowed to {op} here; check its permissions"
        )),
        (_, "InvalidBucketName") => Error::invalid_config(format!("{what}: fix the bucket name in the replica URL")),
        (412, _) | (_, "PreconditionFailed") => Error::precondition_failed(what),
        // AWS answers a conditional write racing another one with 409;
        // either way the host must re-read before trying again.
        (409, "ConditionalRequestConflict") => Error::precondition_failed(what),
        (_, "NoSuchKey" | "NoSuchUpload") | (404, _) => Error::not_found(what),
        (501, _) | (_, "NotImplemented") => Error::unsupported(format!("{what}: the store does not implement this")),
        (_, "RequestTimeout" | "InternalError" | "ServiceUnavailable") | (408, _) | (500..=599, _) => {
            Error::transient(what)
        }
        _ => Error::permanent(what),
    }
}

fn describe(status: u16, e: &xml::S3Error) -> String {
    match (e.code.is_empty(), e.message.is_empty()) {
        (true, true) => format!("HTTP {status}"),
        (true, false) => format!("HTTP {status}: {}", e.message),
        (false, true) => format!("{} (HTTP {status})", e.code),
        (false, false) => format!("{}: {} (HTTP {status})", e.code, e.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: Context = Context {
        op: "put",
        target: "db/x",
        bucket: "b",
        access_key_id: "AKIDEXAMPLE",
    };

    fn body(code: &str) -> Vec<u8> {
        format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message></Error>").into_bytes()
    }

    fn map(status: u16, code: &str) -> Error {
        from_response(status, &[], &body(code), &CTX)
    }

    #[test]
    fn throttling() {
        for (status, code) in [
            (503, "SlowDown"),
            (400, "Throttling"),
            (429, ""),
            (429, "TooManyRequests"),
        ] {
            assert!(matches!(map(status, code), Error::Throttled(_)), "{status} {code}");
        }
        let headers = vec![("Retry-After".to_string(), "3".to_string())];
        match from_response(503, &headers, &body("SlowDown"), &CTX) {
            Error::Throttled(t) => assert_eq!(t.retry_after_ms, Some(3000)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn transient() {
        for (status, code) in [
            (500, "InternalError"),
            (503, "ServiceUnavailable"),
            (502, ""),
            (400, "RequestTimeout"),
            (504, ""),
        ] {
            assert!(matches!(map(status, code), Error::Transient(_)), "{status} {code}");
        }
        assert!(matches!(
            from_response(502, &[], b"<html>bad gateway</html>", &CTX),
            Error::Transient(_)
        ));
    }

    #[test]
    fn access_errors_name_the_key_id() {
        for code in ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", ""] {
            match map(403, code) {
                Error::AccessDenied(m) => assert!(m.contains("AKIDEXAMPLE"), "{m}"),
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn config_errors() {
        match map(404, "NoSuchBucket") {
            Error::InvalidConfig(m) => assert!(
                m.contains("create the bucket or fix the bucket name in the replica URL"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        let headers = vec![("x-amz-bucket-region".to_string(), "eu-west-1".to_string())];
        match from_response(301, &headers, b"", &CTX) {
            Error::InvalidConfig(m) => assert!(m.contains("region=eu-west-1"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn object_level_answers() {
        assert!(matches!(map(404, "NoSuchKey"), Error::NotFound(_)));
        assert!(
            matches!(from_response(404, &[], b"", &CTX), Error::NotFound(_)),
            "HEAD 404 has no body"
        );
        assert!(matches!(map(404, "NoSuchUpload"), Error::NotFound(_)));
        assert!(matches!(map(412, "PreconditionFailed"), Error::PreconditionFailed(_)));
        assert!(matches!(
            map(409, "ConditionalRequestConflict"),
            Error::PreconditionFailed(_)
        ));
        assert!(matches!(map(501, "NotImplemented"), Error::Unsupported(_)));
        assert!(matches!(map(400, "EntityTooSmall"), Error::Permanent(_)));
    }

    #[test]
    fn delete_codes() {
        assert!(matches!(from_code("AccessDenied", "no", &CTX), Error::AccessDenied(_)));
        assert!(matches!(from_code("InternalError", "x", &CTX), Error::Transient(_)));
        assert!(matches!(from_code("SlowDown", "x", &CTX), Error::Throttled(_)));
        assert!(matches!(from_code("Weird", "x", &CTX), Error::Permanent(_)));
    }
}
