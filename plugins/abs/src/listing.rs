//! Azure's XML answers: a page of `List Blobs`, and the error document.

use sluice_sdk::xml;

/// One blob of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub size: u64,
    /// Without quotes.
    pub etag: String,
    /// `Last-Modified`, as written (an HTTP date).
    pub last_modified: Option<String>,
}

/// A page of `List Blobs` and the marker of the next, if any.
pub fn parse(body: &[u8]) -> Result<(Vec<Listed>, Option<String>), String> {
    let root = xml::parse(body)?;
    if root.name != "EnumerationResults" {
        return Err(format!("expected EnumerationResults, got <{}>", root.name));
    }
    let mut blobs = Vec::new();
    for blob in root.child("Blobs").into_iter().flat_map(|b| b.all("Blob")) {
        let name = blob.text_of("Name").ok_or("a listed blob has no Name")?.to_string();
        let props = blob.child("Properties").ok_or_else(|| format!("blob {name:?} has no Properties"))?;
        let size = props
            .text_of("Content-Length")
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| format!("blob {name:?} has no Content-Length"))?;
        let etag = bare_etag(props.text_of("Etag").unwrap_or_default());
        let last_modified = props.text_of("Last-Modified").map(str::to_string);
        blobs.push(Listed { name, size, etag, last_modified });
    }
    let next = root.text_of("NextMarker").map(str::trim).filter(|m| !m.is_empty()).map(str::to_string);
    Ok((blobs, next))
}

/// The `Code` and `Message` of an error document, if the body is one.
pub fn error(body: &[u8]) -> Option<(String, String)> {
    let root = xml::parse(body).ok()?;
    (root.name == "Error").then(|| {
        let code = root.text_of("Code").unwrap_or_default().to_string();
        let message = root.text_of("Message").unwrap_or_default().lines().next().unwrap_or_default().to_string();
        (code, message)
    })
}

/// An ETag without its quotes.
pub fn bare_etag(etag: &str) -> String {
    etag.trim().trim_matches('"').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="http://127.0.0.1:10000/devstoreaccount1" ContainerName="c1">
  <Prefix>db/</Prefix><MaxResults>2</MaxResults>
  <Blobs>
    <Blob><Name>db/a</Name><Properties><Creation-Time>Thu, 03 Dec 2026 10:00:00 GMT</Creation-Time>
      <Last-Modified>Thu, 03 Dec 2026 10:00:01 GMT</Last-Modified><Etag>0x8DB1234</Etag>
      <Content-Length>12</Content-Length><BlobType>BlockBlob</BlobType></Properties><Metadata/></Blob>
    <Blob><Name>db/b &amp; c</Name><Properties><Etag>"0x8DB5678"</Etag><Content-Length>0</Content-Length></Properties></Blob>
  </Blobs>
  <NextMarker>2!16!ZGIvYg--</NextMarker>
</EnumerationResults>"#;

    #[test]
    fn a_page() {
        let (blobs, next) = parse(PAGE.as_bytes()).unwrap();
        assert_eq!(blobs.len(), 2);
        assert_eq!(
            blobs[0],
            Listed {
                name: "db/a".into(),
                size: 12,
                etag: "0x8DB1234".into(),
                last_modified: Some("Thu, 03 Dec 2026 10:00:01 GMT".into())
            }
        );
        assert_eq!((blobs[1].name.as_str(), blobs[1].etag.as_str(), blobs[1].size), ("db/b & c", "0x8DB5678", 0));
        assert_eq!(next.as_deref(), Some("2!16!ZGIvYg--"));
        let last = PAGE.replace("<NextMarker>2!16!ZGIvYg--</NextMarker>", "<NextMarker/>");
        assert_eq!(parse(last.as_bytes()).unwrap().1, None);
        assert!(parse(b"<Error><Code>X</Code></Error>").is_err());
    }

    #[test]
    fn an_error_document() {
        let body = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>ContainerNotFound</Code><Message>The specified container does not exist.\nRequestId:1\nTime:2026</Message></Error>";
        assert_eq!(
            error(body.as_bytes()),
            Some(("ContainerNotFound".into(), "The specified container does not exist.".into()))
        );
        assert_eq!(error(b""), None);
    }
}
