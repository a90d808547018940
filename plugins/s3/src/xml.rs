//! The few S3 XML documents the plugin reads and writes. Responses are
//! small (a list page is at most 1000 entries), so they are read into a
//! tiny tree and queried, rather than streamed.

use quick_xml::escape::escape;
pub use sluice_sdk::xml::parse;

/// An etag without the quotes S3 wraps it in, so values from headers,
/// listings and multipart answers compare equal.
pub fn bare_etag(etag: &str) -> String {
    let etag = etag.trim();
    let etag = etag.strip_prefix("W/").unwrap_or(etag);
    etag.trim_matches('"').to_string()
}

/// An S3 error body: `<Error><Code>..</Code><Message>..</Message></Error>`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct S3Error {
    pub code: String,
    pub message: String,
    /// The bucket's real region, when the request went to the wrong one.
    pub region: Option<String>,
}

/// The error in a body, if it is an error document.
pub fn error(body: &[u8]) -> Option<S3Error> {
    let root = parse(body).ok()?;
    (root.name == "Error").then(|| S3Error {
        code: root.text_of("Code").unwrap_or_default().to_string(),
        message: root.text_of("Message").unwrap_or_default().to_string(),
        region: root.text_of("Region").map(str::to_string),
    })
}

/// One entry of a ListObjectsV2 page.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified: Option<String>,
}

/// A ListObjectsV2 page.
#[derive(Debug, PartialEq, Eq)]
pub struct ListResult {
    pub entries: Vec<Entry>,
    pub truncated: bool,
    pub next_token: Option<String>,
}

pub fn list(body: &[u8]) -> Result<ListResult, String> {
    let root = parse(body)?;
    if root.name != "ListBucketResult" {
        return Err(format!("expected ListBucketResult, got {}", root.name));
    }
    let entries = root
        .all("Contents")
        .map(|c| {
            let size = c.text_of("Size").unwrap_or("0").trim();
            Ok(Entry {
                key: c.text_of("Key").ok_or("list entry without Key")?.to_string(),
                size: size.parse().map_err(|_| format!("bad Size {size:?} in listing"))?,
                etag: c.text_of("ETag").unwrap_or_default().to_string(),
                last_modified: c.text_of("LastModified").map(|t| t.trim().to_string()),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(ListResult {
        entries,
        truncated: root.text_of("IsTruncated").is_some_and(|t| t.trim() == "true"),
        next_token: root
            .text_of("NextContinuationToken")
            .map(str::to_string)
            .filter(|t| !t.is_empty()),
    })
}

/// The upload id from an InitiateMultipartUploadResult.
pub fn upload_id(body: &[u8]) -> Result<String, String> {
    let root = parse(body)?;
    root.text_of("UploadId")
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty())
        .ok_or_else(|| "CreateMultipartUpload answer has no UploadId".into())
}

/// A key DeleteObjects could not remove: (key, code, message).
pub fn delete_errors(body: &[u8]) -> Result<Vec<(String, String, String)>, String> {
    let root = parse(body)?;
    if root.name != "DeleteResult" {
        return Err(format!("expected DeleteResult, got {}", root.name));
    }
    Ok(root
        .all("Error")
        .map(|e| {
            let get = |n| e.text_of(n).unwrap_or_default().to_string();
            (get("Key"), get("Code"), get("Message"))
        })
        .collect())
}

/// The DeleteObjects request body, in quiet mode (only failures come back).
pub fn delete_body<'a>(keys: impl Iterator<Item = &'a str>) -> String {
    let mut body = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?><Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Quiet>true</Quiet>"#,
    );
    for key in keys {
        body.push_str("<Object><Key>");
        body.push_str(&escape(key));
        body.push_str("</Key></Object>");
    }
    body.push_str("</Delete>");
    body
}

/// The CompleteMultipartUpload request body. ETags go back quoted, as S3
/// gave them out.
pub fn complete_body<'a>(parts: impl Iterator<Item = (u32, &'a str)>) -> String {
    let mut body = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?><CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">"#,
    );
    for (number, etag) in parts {
        body.push_str(&format!(
            "<Part><PartNumber>{number}</PartNumber><ETag>\"{}\"</ETag></Part>",
            escape(etag)
        ));
    }
    body.push_str("</CompleteMultipartUpload>");
    body
}

#[cfg(test)]
#[path = "xml_tests.rs"]
mod tests;
