//! The JetStream API as this plugin uses it: request bodies, answers, and
//! what an API error means for the contract.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sluice_sdk::Error;
use std::collections::BTreeMap;

/// JetStream's error codes this plugin acts on.
pub const STREAM_NOT_FOUND: u64 = 10059;
pub const NO_MESSAGE_FOUND: u64 = 10037;
pub const WRONG_LAST_SEQUENCE: u64 = 10071;
const NOT_ENABLED_FOR_ACCOUNT: u64 = 10039;
const NOT_ENABLED: u64 = 10076;

/// An API error (`{"error": {...}}`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    #[serde(default)]
    pub code: u16,
    #[serde(default)]
    pub err_code: u64,
    #[serde(default)]
    pub description: String,
}

#[derive(Deserialize)]
struct Envelope {
    error: Option<ApiError>,
}

/// A JetStream answer: its `error`, or the answer itself.
pub fn parse<T: DeserializeOwned>(payload: &[u8]) -> Result<Result<T, ApiError>, Error> {
    let bad = |e: serde_json::Error| Error::permanent(format!("unreadable JetStream answer: {e}"));
    let envelope: Envelope = serde_json::from_slice(payload).map_err(bad)?;
    if let Some(error) = envelope.error {
        return Ok(Err(error));
    }
    serde_json::from_slice(payload).map(Ok).map_err(bad)
}

/// The contract's error for an API error on `what` (an object, the bucket).
pub fn error(what: &str, e: &ApiError) -> Error {
    let msg = format!("{what}: JetStream error {} ({}): {}", e.code, e.err_code, e.description);
    match (e.code, e.err_code) {
        (_, NOT_ENABLED | NOT_ENABLED_FOR_ACCOUNT) => not_enabled(what),
        (_, WRONG_LAST_SEQUENCE) => Error::precondition_failed(msg),
        (_, NO_MESSAGE_FOUND) => Error::not_found(msg),
        (401 | 403, _) => Error::access_denied(msg),
        (408 | 500..=599, _) => Error::transient(msg),
        (429, _) => Error::throttled(msg, None),
        _ => Error::permanent(msg),
    }
}

/// JetStream is off (no one answers its API, or the account lacks it).
pub fn not_enabled(what: &str) -> Error {
    Error::invalid_config(format!(
        "{what}: JetStream is not enabled on this NATS server or account; run nats-server with -js \
         (or enable JetStream for the account)"
    ))
}

/// A publish acknowledgement.
#[derive(Debug, Deserialize)]
pub struct PubAck {
    pub seq: u64,
}

/// A stored message (`STREAM.MSG.GET`'s `message`).
#[derive(Debug, Deserialize)]
pub struct StoredMsg {
    pub subject: String,
    pub seq: u64,
    #[serde(default)]
    pub data: String,
    #[serde(default)]
    pub time: String,
}

impl StoredMsg {
    pub fn payload(&self) -> Result<Vec<u8>, Error> {
        STANDARD
            .decode(&self.data)
            .map_err(|e| Error::permanent(format!("message {} on {}: bad base64 data: {e}", self.seq, self.subject)))
    }
}

#[derive(Debug, Deserialize)]
pub struct MsgGetAnswer {
    pub message: StoredMsg,
}

/// Stream info with the subjects a filter matched, one page of them.
#[derive(Debug, Deserialize)]
pub struct StreamInfo {
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub state: StreamState,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamState {
    #[serde(default)]
    pub subjects: Option<BTreeMap<String, u64>>,
}

/// The object store's stream, as nats.go creates it: both subject trees,
/// rollups allowed (meta records replace each other), direct gets, new
/// messages refused rather than old ones dropped when a limit is reached.
pub fn stream_config(bucket: &str) -> serde_json::Value {
    serde_json::json!({
        "name": crate::object::stream_name(bucket),
        "subjects": [format!("$O.{bucket}.C.>"), format!("$O.{bucket}.M.>")],
        "retention": "limits",
        "max_consumers": -1,
        "max_msgs": -1,
        "max_bytes": -1,
        "max_age": 0,
        "max_msgs_per_subject": -1,
        "max_msg_size": -1,
        "storage": "file",
        "discard": "new",
        "num_replicas": 1,
        "duplicate_window": 120_000_000_000u64,
        "allow_rollup_hdrs": true,
        "allow_direct": true,
        "deny_delete": false,
        "deny_purge": false,
    })
}

/// `STREAM.MSG.GET` of the newest message on `subject`.
pub fn last_by_subject(subject: &str) -> String {
    serde_json::json!({ "last_by_subj": subject }).to_string()
}

/// `STREAM.MSG.GET` of the first message on `subject` at or after `seq`.
pub fn next_by_subject(seq: u64, subject: &str) -> String {
    serde_json::json!({ "seq": seq, "next_by_subj": subject }).to_string()
}

/// `STREAM.MSG.GET` of the message at `seq`.
pub fn by_sequence(seq: u64) -> String {
    serde_json::json!({ "seq": seq }).to_string()
}

/// `STREAM.INFO` listing the subjects under `filter`, from `offset`.
pub fn subjects_page(filter: &str, offset: u64) -> String {
    serde_json::json!({ "subjects_filter": filter, "offset": offset }).to_string()
}

/// `STREAM.PURGE` of one subject.
pub fn purge_subject(subject: &str) -> String {
    serde_json::json!({ "filter": subject }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_errors() {
        let ack: PubAck = parse(br#"{"stream":"OBJ_b","seq":7}"#).unwrap().unwrap();
        assert_eq!(ack.seq, 7);
        let wrong = br#"{"type":"x","error":{"code":400,"err_code":10071,"description":"wrong last sequence: 5"}}"#;
        let e = parse::<PubAck>(wrong).unwrap().unwrap_err();
        assert!(matches!(error("k", &e), Error::PreconditionFailed(_)));
        let missing = ApiError { code: 404, err_code: NO_MESSAGE_FOUND, description: "no message found".into() };
        assert!(matches!(error("k", &missing), Error::NotFound(_)));
        let off = ApiError { code: 503, err_code: 10039, description: "jetstream not enabled for account".into() };
        match error("bucket b", &off) {
            Error::InvalidConfig(m) => assert!(m.contains("-js"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(error("k", &ApiError { code: 503, ..Default::default() }), Error::Transient(_)));
        assert!(parse::<PubAck>(b"not json").is_err());
    }

    #[test]
    fn stored_messages_and_subject_pages() {
        let m: MsgGetAnswer =
            parse(br#"{"message":{"subject":"$O.b.C.N","seq":3,"data":"aGk=","time":"2025-01-01T00:00:00Z"}}"#)
                .unwrap()
                .unwrap();
        assert_eq!((m.message.seq, m.message.payload().unwrap()), (3, b"hi".to_vec()));
        let info: StreamInfo =
            parse(br#"{"total":2,"offset":0,"limit":100000,"state":{"subjects":{"$O.b.M.YQ==":1}}}"#).unwrap().unwrap();
        assert_eq!((info.total, info.state.subjects.map(|s| s.len())), (2, Some(1)));
        let empty: StreamInfo = parse(br#"{"state":{"messages":0}}"#).unwrap().unwrap();
        assert!(empty.state.subjects.is_none());
        let next: serde_json::Value = serde_json::from_str(&next_by_subject(4, "$O.b.C.N")).unwrap();
        assert_eq!(next, serde_json::json!({"seq": 4, "next_by_subj": "$O.b.C.N"}));
        assert_eq!(stream_config("b")["subjects"][1], "$O.b.M.>");
    }
}
