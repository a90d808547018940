//! The answer to PROPFIND (RFC 4918 `multistatus`): one entry per
//! resource, with what listing and `head` need.

use sluice_sdk::xml;

/// One resource of a multistatus answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// As the server wrote it (a path, or an absolute URL).
    pub href: String,
    pub collection: bool,
    pub size: u64,
    /// Without quotes.
    pub etag: String,
    pub modified_ms: Option<u64>,
}

/// Every resource of the answer whose properties came back (`200` in
/// its `propstat`).
pub fn parse(body: &[u8]) -> Result<Vec<Entry>, String> {
    let root = xml::parse(body)?;
    if root.name != "multistatus" {
        return Err(format!("expected a DAV multistatus answer, got <{}>", root.name));
    }
    let mut out = Vec::new();
    for response in root.all("response") {
        let Some(href) = response.text_of("href") else { continue };
        let found = response
            .all("propstat")
            .filter(|p| p.text_of("status").is_none_or(|s| s.contains(" 200")))
            .filter_map(|p| p.child("prop"));
        let mut entry =
            Entry { href: href.trim().to_string(), collection: false, size: 0, etag: String::new(), modified_ms: None };
        for prop in found {
            if let Some(t) = prop.child("resourcetype") {
                entry.collection |= t.child("collection").is_some();
            }
            if let Some(size) = prop.text_of("getcontentlength") {
                entry.size = size.trim().parse().map_err(|_| format!("bad getcontentlength `{size}`"))?;
            }
            if let Some(etag) = prop.text_of("getetag") {
                entry.etag = bare_etag(etag);
            }
            if let Some(date) = prop.text_of("getlastmodified") {
                entry.modified_ms = http_date_ms(date.trim());
            }
        }
        out.push(entry);
    }
    Ok(out)
}

/// An ETag without its quotes and weakness marker, so values from
/// headers and listings compare equal.
pub fn bare_etag(etag: &str) -> String {
    let etag = etag.trim();
    etag.strip_prefix("W/").unwrap_or(etag).trim_matches('"').to_string()
}

/// Milliseconds since the epoch of an HTTP date (`Sun, 06 Nov 1994
/// 08:49:37 GMT`).
pub fn http_date_ms(date: &str) -> Option<u64> {
    let t = httpdate::parse_http_date(date).ok()?;
    t.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As wsgidav 4 answers (namespace prefixes, a collection, a file,
    /// and a property it could not find in its own propstat).
    const ANSWER: &str = r#"<?xml version="1.0" encoding="utf-8" ?>
<ns0:multistatus xmlns:ns0="DAV:">
 <ns0:response><ns0:href>/dav/app/</ns0:href>
  <ns0:propstat><ns0:prop><ns0:resourcetype><ns0:collection /></ns0:resourcetype>
   <ns0:getlastmodified>Thu, 03 Dec 2026 08:00:00 GMT</ns0:getlastmodified></ns0:prop>
   <ns0:status>HTTP/1.1 200 OK</ns0:status></ns0:propstat>
  <ns0:propstat><ns0:prop><ns0:getcontentlength /><ns0:getetag /></ns0:prop>
   <ns0:status>HTTP/1.1 404 Not Found</ns0:status></ns0:propstat>
 </ns0:response>
 <ns0:response><ns0:href>/dav/app/0009/a%20b.seg</ns0:href>
  <ns0:propstat><ns0:prop><ns0:resourcetype /><ns0:getcontentlength>1234</ns0:getcontentlength>
   <ns0:getetag>"1a2b-1234-5678"</ns0:getetag>
   <ns0:getlastmodified>Thu, 03 Dec 2026 08:00:01 GMT</ns0:getlastmodified></ns0:prop>
   <ns0:status>HTTP/1.1 200 OK</ns0:status></ns0:propstat>
 </ns0:response>
</ns0:multistatus>"#;

    #[test]
    fn parses_collections_and_files() {
        let entries = parse(ANSWER.as_bytes()).unwrap();
        assert_eq!(entries.len(), 2);
        assert!(entries[0].collection);
        assert_eq!(entries[0].href, "/dav/app/");
        let file = &entries[1];
        assert_eq!((file.collection, file.size, file.etag.as_str()), (false, 1234, "1a2b-1234-5678"));
        assert_eq!(file.modified_ms, Some(1_796_284_801_000));
    }

    #[test]
    fn refuses_what_is_not_a_multistatus() {
        assert!(parse(b"<html><body>login</body></html>").is_err());
        assert!(parse(b"not xml at all <").is_err());
    }

    #[test]
    fn etags_compare_bare() {
        assert_eq!(bare_etag("W/\"abc\""), "abc");
        assert_eq!(bare_etag(" \"abc\" "), "abc");
    }
}
