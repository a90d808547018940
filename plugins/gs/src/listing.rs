//! GCS's JSON answers: an object resource, a page of `objects.list`, and
//! the error document.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

/// The fields of an object resource used here. GCS writes 64-bit numbers
/// as strings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Object {
    pub name: String,
    #[serde(default)]
    pub size: Option<String>,
    #[serde(default)]
    pub generation: Option<String>,
    /// Last change, RFC 3339.
    #[serde(default)]
    pub updated: Option<String>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

impl Object {
    pub fn size(&self) -> u64 {
        self.size.as_deref().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }

    /// The generation: the ETag this plugin hands out (see the crate docs).
    pub fn etag(&self) -> String {
        self.generation.clone().unwrap_or_default()
    }

    pub fn modified_ms(&self) -> Option<u64> {
        let t = humantime::parse_rfc3339_weak(self.updated.as_deref()?.trim_end_matches('Z')).ok()?;
        Some(t.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64)
    }

    pub fn metadata(&self) -> Vec<(String, String)> {
        self.metadata.clone().map(|m| m.into_iter().collect()).unwrap_or_default()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    #[serde(default)]
    items: Vec<Object>,
    next_page_token: Option<String>,
}

/// An object resource.
pub fn object(body: &[u8]) -> Result<Object, String> {
    serde_json::from_slice(body).map_err(|e| format!("not an object resource: {e}"))
}

/// A page of `objects.list` and the token of the next, if any.
pub fn page(body: &[u8]) -> Result<(Vec<Object>, Option<String>), String> {
    let page: Page = serde_json::from_slice(body).map_err(|e| format!("not an object listing: {e}"))?;
    Ok((page.items, page.next_page_token.filter(|t| !t.is_empty())))
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
}

/// The message of an error document, if the body is one.
pub fn error_message(body: &[u8]) -> Option<String> {
    let e: ErrorBody = serde_json::from_slice(body).ok()?;
    Some(e.error.message).filter(|m| !m.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"{"kind":"storage#objects","items":[
      {"kind":"storage#object","name":"db/a","bucket":"bk","size":"12","generation":"1796294631718665",
       "updated":"2026-12-03T10:43:51.71865Z","metadata":{"timestamp":"2026-12-03T10:00:00Z"},"etag":"CJmW"},
      {"name":"db/b & c","size":"0","generation":"7"}],
      "nextPageToken":"db/c"}"#;

    #[test]
    fn a_page() {
        let (objects, next) = page(PAGE.as_bytes()).unwrap();
        assert_eq!(objects.len(), 2);
        assert_eq!((objects[0].size(), objects[0].etag().as_str()), (12, "1796294631718665"));
        assert_eq!(objects[0].modified_ms(), Some(1_796_294_631_718));
        assert_eq!(objects[0].metadata(), vec![("timestamp".to_string(), "2026-12-03T10:00:00Z".to_string())]);
        assert_eq!((objects[1].name.as_str(), objects[1].size(), objects[1].modified_ms()), ("db/b & c", 0, None));
        assert_eq!(next.as_deref(), Some("db/c"));
        assert_eq!(page(br#"{"kind":"storage#objects"}"#).unwrap(), (vec![], None));
        assert!(page(b"Not Found").is_err());
    }

    #[test]
    fn an_object_and_an_error() {
        let o = object(br#"{"name":"x","size":"5","generation":"9","updated":"2026-12-03T10:43:51Z"}"#).unwrap();
        assert_eq!((o.size(), o.etag(), o.modified_ms()), (5, "9".to_string(), Some(1_796_294_631_000)));
        let e = br#"{"error":{"code":404,"message":"The specified bucket does not exist.","errors":[]}}"#;
        assert_eq!(error_message(e).as_deref(), Some("The specified bucket does not exist."));
        assert_eq!(error_message(b"Not Found"), None);
    }
}
