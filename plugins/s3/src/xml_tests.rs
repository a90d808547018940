use super::*;

#[test]
fn parses_a_list_page() {
    let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>sluice-test</Name>
  <Prefix>db/many/</Prefix>
  <KeyCount>2</KeyCount>
  <MaxKeys>2</MaxKeys>
  <IsTruncated>true</IsTruncated>
  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
  <Contents>
    <Key>db/many/equals=and&amp;amp</Key>
    <LastModified>2026-11-25T17:45:29.000Z</LastModified>
    <ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag>
    <Size>14</Size>
    <StorageClass>STANDARD</StorageClass>
  </Contents>
  <Contents>
    <Key> spaced &#x65E5;&#26412; </Key>
    <LastModified>2026-11-25T17:45:30.123Z</LastModified>
    <ETag>"abc-2"</ETag>
    <Size>41943040</Size>
    <StorageClass>STANDARD</StorageClass>
  </Contents>
</ListBucketResult>"#;
    let page = list(body).unwrap();
    assert!(page.truncated);
    assert_eq!(
        page.next_token.as_deref(),
        Some("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=")
    );
    assert_eq!(page.entries.len(), 2);
    assert_eq!(page.entries[0].key, "db/many/equals=and&amp");
    assert_eq!(page.entries[0].etag, "\"9b2cf535f27731c974343645a3985328\"");
    assert_eq!(page.entries[0].size, 14);
    assert_eq!(
        page.entries[0].last_modified.as_deref(),
        Some("2026-11-25T17:45:29.000Z")
    );
    assert_eq!(page.entries[1].key, " spaced 日本 ");
    assert_eq!(page.entries[1].size, 41943040);
}

#[test]
fn parses_an_empty_last_page() {
    let body = br#"<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>x/</Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>"#;
    let page = list(body).unwrap();
    assert_eq!(
        page,
        ListResult {
            entries: vec![],
            truncated: false,
            next_token: None
        }
    );
    assert!(list(b"<Error><Code>NoSuchBucket</Code></Error>").is_err());
    assert!(list(b"<ListBucketResult><Contents><Key>k</Key>").is_err());
}

#[test]
fn parses_error_bodies() {
    let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message><BucketName>nope</BucketName><RequestId>4442587FB7D0A2F9</RequestId></Error>"#;
    let e = error(body).unwrap();
    assert_eq!(
        (e.code.as_str(), e.message.as_str(), e.region),
        ("NoSuchBucket", "The specified bucket does not exist", None)
    );
    let body = br#"<Error><Code>AuthorizationHeaderMalformed</Code><Message>the region 'us-east-1' is wrong; expecting 'eu-west-1'</Message><Region>eu-west-1</Region></Error>"#;
    assert_eq!(error(body).unwrap().region.as_deref(), Some("eu-west-1"));
    assert_eq!(error(b""), None);
    assert_eq!(error(b"<html>Bad gateway</html>"), None);
}

#[test]
fn parses_multipart_answers() {
    let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>b</Bucket><Key>db/snap</Key><UploadId>VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA</UploadId></InitiateMultipartUploadResult>"#;
    assert_eq!(
        upload_id(body).unwrap(),
        "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA"
    );
    assert!(upload_id(b"<InitiateMultipartUploadResult/>").is_err());
}

#[test]
fn parses_delete_results() {
    let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Error><Key>db/locked</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error>
  <Error><Key>db/a&lt;b</Key><Code>InternalError</Code><Message>try again</Message></Error>
</DeleteResult>"#;
    let errors = delete_errors(body).unwrap();
    assert_eq!(
        errors,
        vec![
            ("db/locked".into(), "AccessDenied".into(), "Access Denied".into()),
            ("db/a<b".into(), "InternalError".into(), "try again".into()),
        ]
    );
    assert_eq!(delete_errors(b"<DeleteResult xmlns=\"x\"/>").unwrap(), vec![]);
}

#[test]
fn builds_request_bodies() {
    let body = delete_body(["a&b", "c<d>"].into_iter());
    assert!(body.contains(
        "<Quiet>true</Quiet><Object><Key>a&amp;b</Key></Object><Object><Key>c&lt;d&gt;</Key></Object></Delete>"
    ));
    let parsed = parse(body.as_bytes()).unwrap();
    let keys: Vec<_> = parsed.all("Object").filter_map(|o| o.text_of("Key")).collect();
    assert_eq!(keys, ["a&b", "c<d>"]);
    let body = complete_body([(1, "e1"), (2, "e2")].into_iter());
    assert!(body.ends_with("<Part><PartNumber>1</PartNumber><ETag>\"e1\"</ETag></Part><Part><PartNumber>2</PartNumber><ETag>\"e2\"</ETag></Part></CompleteMultipartUpload>"));
}

#[test]
fn etags_lose_their_quotes() {
    assert_eq!(
        bare_etag("\"9b2cf535f27731c974343645a3985328\""),
        "9b2cf535f27731c974343645a3985328"
    );
    assert_eq!(bare_etag("W/\"abc-2\""), "abc-2");
    assert_eq!(bare_etag("plain"), "plain");
}
