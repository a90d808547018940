use super::*;

fn with(url: &str, settings: &[(&str, &str)]) -> Result<S3Config, Error> {
    let settings = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    resolve(&Config::new(url, settings))
}

fn loc(url: &str) -> Location {
    match with(url, &[]) {
        Ok(c) => c.location,
        Err(e) => panic!("{url}: {e:?}"),
    }
}

/// (bucket, prefix, scheme, host, region, path_style)
fn parts(l: &Location) -> (&str, &str, &str, &str, &str, bool) {
    (&l.bucket, &l.prefix, &l.scheme, &l.host, &l.region, l.path_style)
}

#[test]
fn plain_aws_url() {
    let l = loc("s3://mybucket/db/main");
    assert_eq!(
        parts(&l),
        (
            "mybucket",
            "db/main/",
            "https",
            "s3.us-east-1.amazonaws.com",
            "us-east-1",
            false
        )
    );
    assert_eq!(
        l.object_url("db/main/a b+c"),
        "https://mybucket.s3.us-east-1.amazonaws.com/db/main/a%20b%2Bc"
    );
    assert_eq!(l.bucket_url(), "https://mybucket.s3.us-east-1.amazonaws.com/");
}

#[test]
fn aws_virtual_host_forms() {
    let l = loc("s3://mybucket.s3.amazonaws.com/db");
    assert_eq!(
        parts(&l),
        (
            "mybucket",
            "db/",
            "https",
            "s3.us-east-1.amazonaws.com",
            "us-east-1",
            false
        )
    );
    let l = loc("s3://mybucket.s3.eu-west-1.amazonaws.com/db");
    assert_eq!(
        parts(&l),
        (
            "mybucket",
            "db/",
            "https",
            "s3.eu-west-1.amazonaws.com",
            "eu-west-1",
            false
        )
    );
    let l = loc("s3://mybucket.s3-us-west-2.amazonaws.com/db");
    assert_eq!(
        parts(&l),
        (
            "mybucket",
            "db/",
            "https",
            "s3.us-west-2.amazonaws.com",
            "us-west-2",
            false
        )
    );
    let l = loc("s3://my.dotted.bucket.s3.eu-central-1.amazonaws.com/db");
    assert_eq!(l.bucket, "my.dotted.bucket");
    assert!(l.path_style, "dotted buckets cannot be virtual hosts over TLS");
    assert_eq!(
        l.object_url("db/x"),
        "https://s3.eu-central-1.amazonaws.com/my.dotted.bucket/db/x"
    );
}

#[test]
fn region_setting_moves_the_aws_endpoint() {
    let c = with("s3://mybucket/db?region=ap-south-1", &[]).unwrap();
    assert_eq!(c.location.host, "s3.ap-south-1.amazonaws.com");
    let c = with("s3://mybucket/db?region=ap-south-1", &[("region", "eu-north-1")]).unwrap();
    assert_eq!(c.location.host, "s3.eu-north-1.amazonaws.com");
}

#[test]
fn digitalocean_spaces_from_the_guide() {
    let l = loc("s3://SPACE.nyc3.digitaloceanspaces.com/db");
    assert_eq!(
        parts(&l),
        ("SPACE", "db/", "https", "nyc3.digitaloceanspaces.com", "nyc3", true)
    );
    assert_eq!(l.object_url("db/x"), "https://nyc3.digitaloceanspaces.com/SPACE/db/x");
}

#[test]
fn hosted_providers() {
    let cases = [
        (
            "s3://b.s3.us-west-002.backblazeb2.com/db",
            "s3.us-west-002.backblazeb2.com",
            "us-west-002",
        ),
        (
            "s3://b.us-east-1.linodeobjects.com/db",
            "us-east-1.linodeobjects.com",
            "us-east-1",
        ),
        ("s3://b.s3.fr-par.scw.cloud/db", "s3.fr-par.scw.cloud", "fr-par"),
        ("s3://b.s3.filebase.com/db", "s3.filebase.com", "us-east-1"),
        (
            "s3://b.0123abcd.r2.cloudflarestorage.com/db",
            "0123abcd.r2.cloudflarestorage.com",
            "auto",
        ),
        ("s3://b.fly.storage.tigris.dev/db", "fly.storage.tigris.dev", "auto"),
        (
            "s3://b.fsn1.your-objectstorage.com/db",
            "fsn1.your-objectstorage.com",
            "fsn1",
        ),
    ];
    for (url, host, region) in cases {
        let l = loc(url);
        assert_eq!(parts(&l), ("b", "db/", "https", host, region, true), "{url}");
    }
}

#[test]
fn providers_by_endpoint() {
    let l = loc("s3://b/db?endpoint=fly.storage.tigris.dev");
    assert_eq!(parts(&l), ("b", "db/", "https", "fly.storage.tigris.dev", "auto", true));
    let l = loc("s3://b/db?endpoint=https://nbg1.your-objectstorage.com");
    assert_eq!(
        parts(&l),
        ("b", "db/", "https", "nbg1.your-objectstorage.com", "nbg1", true)
    );
    let l = loc("s3://b/db?endpoint=nyc3.digitaloceanspaces.com");
    assert_eq!(l.region, "nyc3");
}

#[test]
fn minio_style_host_and_port() {
    let l = loc("s3://mybucket.localhost:9000/db");
    assert_eq!(
        parts(&l),
        ("mybucket", "db/", "http", "localhost:9000", "us-east-1", true)
    );
    let l = loc("s3://mybucket.minio.internal:9000/db");
    assert_eq!(
        parts(&l),
        ("mybucket", "db/", "http", "minio.internal:9000", "us-east-1", true)
    );
    let l = loc("s3://127.0.0.1:9000/mybucket/db/x");
    assert_eq!(
        parts(&l),
        ("mybucket", "db/x/", "http", "127.0.0.1:9000", "us-east-1", true)
    );
    assert_eq!(l.object_url("db/x/k"), "http://127.0.0.1:9000/mybucket/db/x/k");
    assert_eq!(l.bucket_url(), "http://127.0.0.1:9000/mybucket");
}

#[test]
fn endpoint_scheme_defaults() {
    let cases = [
        ("127.0.0.1:9000", "http", "127.0.0.1:9000"),
        ("localhost:9000", "http", "localhost:9000"),
        ("10.1.2.3", "http", "10.1.2.3"),
        ("172.20.0.5:9000", "http", "172.20.0.5:9000"),
        ("192.168.1.5:9000", "http", "192.168.1.5:9000"),
        ("[::1]:9000", "http", "[::1]:9000"),
        ("minio.example.com", "https", "minio.example.com"),
        ("minio.example.com:443", "https", "minio.example.com"),
        ("8.8.8.8:9000", "https", "8.8.8.8:9000"),
        ("http://minio.example.com:80", "http", "minio.example.com"),
        ("https://127.0.0.1:9000/", "https", "127.0.0.1:9000"),
    ];
    for (endpoint, scheme, host) in cases {
        let l = loc(&format!("s3://b/db?endpoint={endpoint}"));
        assert_eq!((l.scheme.as_str(), l.host.as_str()), (scheme, host), "{endpoint}");
        assert!(l.path_style, "an endpoint turns on path style");
        assert_eq!(l.region, "us-east-1");
    }
}

#[test]
fn bad_endpoints_are_config_errors() {
    for endpoint in ["ftp://x", "https://x/path", "", "http://"] {
        let r = with("s3://b/db", &[("endpoint", endpoint)]);
        if endpoint.is_empty() {
            assert!(r.is_ok(), "an empty setting means unset");
        } else {
            assert!(matches!(r, Err(Error::InvalidConfig(_))), "{endpoint}: {r:?}");
        }
    }
}

#[test]
fn expanded_config_settings() {
    let settings = [
        ("bucket", "mybucket"),
        ("path", "dbs/app"),
        ("endpoint", "127.0.0.1:8333"),
        ("region", "eu-west-3"),
    ];
    let c = with("s3://", &settings).unwrap();
    assert_eq!(
        parts(&c.location),
        ("mybucket", "dbs/app/", "http", "127.0.0.1:8333", "eu-west-3", true)
    );
    // Settings win over the URL.
    let c = with("s3://other/elsewhere?region=us-west-1&endpoint=example.com", &settings).unwrap();
    assert_eq!(
        parts(&c.location),
        ("mybucket", "dbs/app/", "http", "127.0.0.1:8333", "eu-west-3", true)
    );
    // A bucket setting with a path-only URL keeps the whole path as prefix.
    let c = with("s3:///dbs/app", &[("bucket", "mybucket")]).unwrap();
    assert_eq!(
        (c.location.bucket.as_str(), c.location.prefix.as_str()),
        ("mybucket", "dbs/app/")
    );
}

#[test]
fn flags_from_query_and_settings() {
    let c = with(
        "s3://b/db?endpoint=127.0.0.1:9000&forcePathStyle=false&storageClass=STANDARD_IA&signPayload=false",
        &[],
    )
    .unwrap();
    assert!(!c.location.path_style);
    assert_eq!(c.location.object_url("db/k"), "http://b.127.0.0.1:9000/db/k");
    assert_eq!(c.storage_class.as_deref(), Some("STANDARD_IA"));
    assert!(!c.sign_payload);
    assert!(c.conditional_writes);
    let c = with(
        "s3://b/db",
        &[
            ("force-path-style", "true"),
            ("storage-class", "GLACIER_IR"),
            ("conditional-writes", "false"),
        ],
    )
    .unwrap();
    assert!(c.location.path_style);
    assert_eq!(c.storage_class.as_deref(), Some("GLACIER_IR"));
    assert!(c.sign_payload);
    assert!(!c.conditional_writes);
    let c = with("s3://b/db?partSize=16777216&concurrency=4", &[]).unwrap();
    assert_eq!(c.location.prefix, "db/");
    assert!(matches!(
        with("s3://b/db?partSize=big", &[]),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        with("s3://b/db?forcePathStyle=maybe", &[]),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn skip_verify_only_where_harmless() {
    assert!(matches!(
        with("s3://b/db?skipVerify=true", &[]),
        Err(Error::Unsupported(_))
    ));
    assert!(with("s3://b/db?skipVerify=true&endpoint=127.0.0.1:9000", &[]).is_ok());
    assert!(with("s3://b/db?skipVerify=false", &[]).is_ok());
}

#[test]
fn prefixes_are_normalized() {
    assert_eq!(loc("s3://b").prefix, "");
    assert_eq!(loc("s3://b/").prefix, "");
    assert_eq!(loc("s3://b//a//b/").prefix, "a/b/");
    assert_eq!(loc("s3://b/with%20space").prefix, "with space/");
}

#[test]
fn missing_or_bad_bucket_is_a_config_error() {
    for url in [
        "s3://",
        "s3:///",
        "s3://127.0.0.1:9000/",
        "s3://bad%2Fbucket/x",
        "http://b/x",
    ] {
        assert!(matches!(with(url, &[]), Err(Error::InvalidConfig(_))), "{url}");
    }
}

#[test]
fn credentials_in_the_url_are_refused_without_echo() {
    match with("s3://AKID:s3cr3t@bucket/db", &[]) {
        Err(Error::InvalidConfig(m)) => assert!(!m.contains("s3cr3t"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn encryption_settings_reach_the_config() {
    let c = with("s3://b/db", &[]).unwrap();
    assert_eq!(c.sse, Sse::None);
    let c = with("s3://b/db", &[("sse-kms-key-id", "alias/db")]).unwrap();
    assert_eq!(
        c.sse,
        Sse::Kms {
            key_id: "alias/db".into()
        }
    );
    let c = with("s3://b/db", &[("sse-customer-key", "0123456789abcdef0123456789abcdef")]).unwrap();
    assert!(matches!(c.sse, Sse::Customer { .. }));
    // A bad key fails `open`, before any request is made.
    assert!(matches!(
        with("s3://b/db", &[("sse-customer-key", "too short")]),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        with(
            "s3://b/db",
            &[
                ("sse-customer-key", "0123456789abcdef0123456789abcdef"),
                ("sse-kms-key-id", "alias/db")
            ]
        ),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn oss_urls_reach_the_regions_endpoint_with_virtual_hosts_and_no_conditional_writes() {
    let c = with("oss://my-bucket/backups/app", &[]).unwrap();
    let l = &c.location;
    assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("my-bucket", "backups/app/"));
    assert_eq!(
        (l.host.as_str(), l.region.as_str(), l.path_style),
        ("oss-cn-hangzhou.aliyuncs.com", "cn-hangzhou", false)
    );
    assert!(!c.conditional_writes);
    let c = with("oss://b/p", &[("region", "ap-southeast-1")]).unwrap();
    assert_eq!(c.location.host, "oss-ap-southeast-1.aliyuncs.com");
    assert_eq!(
        c.location.object_url("p/k"),
        "https://b.oss-ap-southeast-1.aliyuncs.com/p/k"
    );
    let c = with("oss://b/p?endpoint=127.0.0.1:8333", &[("conditional-writes", "true")]).unwrap();
    assert_eq!(
        (c.location.host.as_str(), c.location.path_style, c.conditional_writes),
        ("127.0.0.1:8333", true, true)
    );
}
