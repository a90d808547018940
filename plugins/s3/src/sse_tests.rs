use super::*;

/// A key given as 32 raw characters, its Base64 and the Base64 of its MD5
/// (from Python's `base64` and `hashlib`).
const RAW_KEY: &str = "0123456789abcdef0123456789abcdef";
const RAW_KEY_B64: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const RAW_KEY_MD5_B64: &str = "hRasmdxgYDKV3nvbahU1MA==";
/// Bytes 0..32, which are not text, given Base64-encoded; and their MD5.
const BINARY_KEY_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const BINARY_KEY_MD5_B64: &str = "tP/LI3N87DFaSk0aoqYgzg==";

fn resolved(settings: &[(&str, &str)]) -> Result<Sse, Error> {
    let settings = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    resolve(&Config::new("s3://bucket/db", settings))
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn invalid(result: Result<Sse, Error>) -> String {
    match result {
        Err(Error::InvalidConfig(message)) => message,
        other => panic!("expected invalid-config, got {other:?}"),
    }
}

#[test]
fn nothing_set_sends_nothing() {
    let sse = resolved(&[]).expect("no settings");
    assert_eq!(sse, Sse::None);
    assert!(sse.write_headers().is_empty());
    assert!(sse.data_headers().is_empty());
}

#[test]
fn raw_customer_key_is_encoded_with_its_md5() {
    let sse = resolved(&[(CUSTOMER_KEY_SETTING, RAW_KEY)]).expect("32-byte key");
    let expected = headers(&[
        (HEADER_CUSTOMER_ALGORITHM, DEFAULT_CUSTOMER_ALGORITHM),
        (HEADER_CUSTOMER_KEY, RAW_KEY_B64),
        (HEADER_CUSTOMER_KEY_MD5, RAW_KEY_MD5_B64),
    ]);
    // SSE-C goes on writes and on every read of the data alike.
    assert_eq!(sse.write_headers(), expected);
    assert_eq!(sse.data_headers(), expected);
}

#[test]
fn base64_customer_key_is_decoded() {
    let sse = resolved(&[(CUSTOMER_KEY_SETTING, BINARY_KEY_B64)]).expect("Base64 key");
    assert_eq!(
        sse.data_headers(),
        headers(&[
            (HEADER_CUSTOMER_ALGORITHM, DEFAULT_CUSTOMER_ALGORITHM),
            (HEADER_CUSTOMER_KEY, BINARY_KEY_B64),
            (HEADER_CUSTOMER_KEY_MD5, BINARY_KEY_MD5_B64),
        ])
    );
    // The Base64 spelling of a key means the same key as the raw one.
    assert_eq!(
        resolved(&[(CUSTOMER_KEY_SETTING, RAW_KEY_B64)]).expect("Base64 key"),
        resolved(&[(CUSTOMER_KEY_SETTING, RAW_KEY)]).expect("raw key")
    );
}

#[test]
fn customer_algorithm_is_passed_through() {
    // Not checked here: the store decides which algorithms it offers.
    let algorithm = "AES256-FUTURE";
    let sse = resolved(&[(CUSTOMER_KEY_SETTING, RAW_KEY), (CUSTOMER_ALGORITHM_SETTING, algorithm)]).expect("key");
    assert_eq!(
        sse.data_headers()[0],
        (HEADER_CUSTOMER_ALGORITHM.to_string(), algorithm.to_string())
    );
}

#[test]
fn kms_key_goes_on_writes_only() {
    let sse = resolved(&[(KMS_KEY_SETTING, "arn:aws:kms:us-east-1:111122223333:key/abcd")]).expect("kms");
    assert_eq!(
        sse.write_headers(),
        headers(&[
            (HEADER_SSE, KMS_ALGORITHM),
            (HEADER_KMS_KEY_ID, "arn:aws:kms:us-east-1:111122223333:key/abcd"),
        ])
    );
    assert!(sse.data_headers().is_empty());
}

#[test]
fn customer_and_kms_together_are_refused() {
    let message = invalid(resolved(&[
        (CUSTOMER_KEY_SETTING, RAW_KEY),
        (KMS_KEY_SETTING, "alias/db"),
    ]));
    assert!(
        message.contains(CUSTOMER_KEY_SETTING) && message.contains(KMS_KEY_SETTING),
        "{message}"
    );
}

#[test]
fn algorithm_without_key_is_refused() {
    invalid(resolved(&[(CUSTOMER_ALGORITHM_SETTING, "AES256")]));
    invalid(resolved(&[
        (CUSTOMER_ALGORITHM_SETTING, "AES256"),
        (KMS_KEY_SETTING, "alias/db"),
    ]));
}

#[test]
fn keys_of_the_wrong_size_are_refused_without_echoing_them() {
    for bad in [
        "short",
        "0123456789abcdef0123456789abcdef0",            // 33 raw bytes
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZQ==", // Base64 of 31 bytes
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY",  // Base64 missing its padding
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY!", // not Base64
    ] {
        let message = invalid(resolved(&[(CUSTOMER_KEY_SETTING, bad)]));
        assert!(!message.contains(bad), "{message}");
    }
}

#[test]
fn empty_settings_count_as_unset() {
    let sse = resolved(&[(CUSTOMER_KEY_SETTING, ""), (KMS_KEY_SETTING, "")]).expect("empty");
    assert_eq!(sse, Sse::None);
}

#[test]
fn debug_output_hides_the_key() {
    let sse = resolved(&[(CUSTOMER_KEY_SETTING, RAW_KEY)]).expect("key");
    let shown = format!("{sse:?}");
    assert!(
        !shown.contains(RAW_KEY_B64) && !shown.contains(RAW_KEY_MD5_B64),
        "{shown}"
    );
}
