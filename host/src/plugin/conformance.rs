//! The conformance suite every plugin must pass (`sluice plugin check`):
//! the contract's promises exercised against a real store, under a
//! private prefix that is removed afterwards.

use super::bindings::{ByteRange, Precondition, PutOptions};
use super::error::StorageError;
use super::instance::Instance;
use super::store::{PluginStore, part_size};
use sha2::{Digest, Sha256};

/// Keys for the pagination case: more than two pages of `PAGE`.
const MANY_KEYS: usize = 250;
const PAGE: u32 = 100;

/// Outcome of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    /// The plugin declares it does not support this.
    Skip(String),
}

/// One case's result.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: &'static str,
    pub outcome: Outcome,
    /// Replication needs it to pass (the others are capabilities a plugin
    /// may declare it lacks, or promises the host does not lean on).
    pub needed: bool,
}

/// Cases replication can do without: conditional writes (the lease falls
/// back, decision 17), ranged reads (whole objects are fetched instead),
/// multipart uploads (objects must then fit one put), object metadata.
const OPTIONAL: &[&str] = &[
    "head reports size, etag and metadata",
    "ranged reads",
    "put if-absent",
    "put if-match",
    "large object in parts",
    "aborted upload leaves nothing",
];

type CaseResultInner = Result<Outcome, String>;

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(msg()) }
}

fn opts() -> PutOptions {
    PutOptions { precondition: Precondition::None, metadata: Vec::new(), content_sha256: None }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// Run every case; `on_case` sees each result as it completes.
pub async fn run(store: &PluginStore, mut on_case: impl FnMut(&CaseResult)) -> Vec<CaseResult> {
    let prefix = format!("sluice-check-{:016x}/", rand::random::<u64>());
    let mut results = Vec::new();
    let mut record = |name: &'static str, r: CaseResultInner| {
        let result = CaseResult { name, outcome: r.unwrap_or_else(Outcome::Fail), needed: !OPTIONAL.contains(&name) };
        on_case(&result);
        results.push(result);
    };
    let mut session = match store.session().await {
        Ok(s) => s,
        Err(e) => {
            record("open store", Err(e.to_string()));
            return results;
        }
    };
    record("open store", Ok(Outcome::Pass));
    let p = prefix.as_str();
    // Wrong credentials or a missing bucket would fail every case the same
    // way: say it once and stop.
    if let Err(e) = session.list(p, None, 1).await
        && matches!(e.storage(), Some(StorageError::AccessDenied(_) | StorageError::InvalidConfig(_)))
    {
        record("store accepts the credentials", Err(format!("{e}; fix the credentials or URL and run again")));
        return results;
    }
    // A crash poisons the instance; one case's crash must not fail the
    // cases after it, so each starts on a healthy instance.
    macro_rules! case {
        ($name:literal, $run:expr) => {
            if session.is_poisoned() {
                match store.session().await {
                    Ok(fresh) => session = fresh,
                    Err(e) => {
                        record($name, Err(format!("no fresh instance after a crash: {e}")));
                        return results;
                    }
                }
            }
            record($name, $run);
        };
    }
    case!("put then get returns the same bytes", put_get(&mut session, p).await);
    case!("objects outlive the plugin instance", fresh_instance(store, &mut session, p).await);
    case!("empty object", empty_object(&mut session, p).await);
    case!("head reports size, etag and metadata", head(&mut session, p).await);
    case!("overwrite replaces the object", overwrite(&mut session, p).await);
    case!("get and head of a missing key are not-found", missing(&mut session, p).await);
    case!("ranged reads", ranges(store, &mut session, p).await);
    case!("put if-absent", if_absent(store, &mut session, p).await);
    case!("put if-match", if_match(store, &mut session, p).await);
    case!("list by prefix with pagination", pagination(&mut session, p).await);
    case!("batch delete (including missing keys)", delete(&mut session, p).await);
    case!("odd key names", odd_keys(&mut session, p).await);
    case!("invalid keys are refused", invalid_keys(&mut session).await);
    case!("large object in parts", large_object(store, &mut session, p).await);
    case!("aborted upload leaves nothing", aborted_upload(store, &mut session, p).await);
    record("cleanup", cleanup(store, p).await);
    results
}

async fn put_get(s: &mut Instance, p: &str) -> CaseResultInner {
    let key = format!("{p}basic/object.bin");
    let data = pattern(100_000, 7);
    let meta = s.put(&key, &data, &opts()).await.map_err(|e| e.to_string())?;
    ensure(meta.size == data.len() as u64, || format!("put reported size {}", meta.size))?;
    let back = s.get(&key, None).await.map_err(|e| e.to_string())?;
    ensure(back == data, || format!("got {} bytes back, not the {} written", back.len(), data.len()))?;
    Ok(Outcome::Pass)
}

/// Written by one instance, read by a new one: a plugin that kept objects
/// in its own memory (lost with every instance, which is per batch) fails.
async fn fresh_instance(store: &PluginStore, s: &mut Instance, p: &str) -> CaseResultInner {
    let key = format!("{p}fresh/object.bin");
    let data = pattern(10_000, 3);
    s.put(&key, &data, &opts()).await.map_err(|e| e.to_string())?;
    let mut other = store.session().await.map_err(|e| e.to_string())?;
    let back = other.get(&key, None).await.map_err(|e| format!("a new instance cannot read it: {e}"))?;
    ensure(back == data, || "a new instance read different bytes".into())?;
    Ok(Outcome::Pass)
}

async fn empty_object(s: &mut Instance, p: &str) -> CaseResultInner {
    let key = format!("{p}empty");
    s.put(&key, &[], &opts()).await.map_err(|e| e.to_string())?;
    let back = s.get(&key, None).await.map_err(|e| e.to_string())?;
    ensure(back.is_empty(), || format!("empty object read back as {} bytes", back.len()))?;
    let meta = s.head(&key).await.map_err(|e| e.to_string())?;
    ensure(meta.size == 0, || format!("empty object has size {}", meta.size))?;
    Ok(Outcome::Pass)
}

async fn head(s: &mut Instance, p: &str) -> CaseResultInner {
    let key = format!("{p}meta/with-metadata");
    let mut options = opts();
    options.metadata =
        vec![("timestamp".into(), "2026-11-25T17:45:29Z".into()), ("txid".into(), "00000000000000ff".into())];
    let put = s.put(&key, b"hello", &options).await.map_err(|e| e.to_string())?;
    let meta = s.head(&key).await.map_err(|e| e.to_string())?;
    ensure(meta.size == 5, || format!("head size {}", meta.size))?;
    ensure(!meta.etag.is_empty(), || "head returned an empty etag".into())?;
    ensure(meta.etag == put.etag, || format!("head etag {} differs from put etag {}", meta.etag, put.etag))?;
    ensure(meta.key == key, || format!("head returned key {:?}", meta.key))?;
    for (k, v) in &options.metadata {
        let found = meta.metadata.iter().find(|(mk, _)| mk == k).map(|(_, mv)| mv);
        ensure(found == Some(v), || format!("metadata {k} came back as {found:?}"))?;
    }
    Ok(Outcome::Pass)
}

async fn overwrite(s: &mut Instance, p: &str) -> CaseResultInner {
    let key = format!("{p}overwrite");
    let first = s.put(&key, b"first version", &opts()).await.map_err(|e| e.to_string())?;
    let second = s.put(&key, b"second", &opts()).await.map_err(|e| e.to_string())?;
    ensure(first.etag != second.etag, || "etag did not change on overwrite".into())?;
    let back = s.get(&key, None).await.map_err(|e| e.to_string())?;
    ensure(back == b"second", || format!("read {:?} after overwrite", String::from_utf8_lossy(&back)))?;
    Ok(Outcome::Pass)
}

async fn missing(s: &mut Instance, p: &str) -> CaseResultInner {
    let key = format!("{p}does/not/exist");
    match s.get(&key, None).await {
        Err(e) if e.is_not_found() => {}
        other => return Err(format!("get of a missing key returned {other:?}")),
    }
    match s.head(&key).await {
        Err(e) if e.is_not_found() => {}
        other => return Err(format!("head of a missing key returned {other:?}")),
    }
    Ok(Outcome::Pass)
}

async fn ranges(store: &PluginStore, s: &mut Instance, p: &str) -> CaseResultInner {
    if !store.capabilities().ranged_reads {
        return Ok(Outcome::Skip("plugin declares no ranged reads".into()));
    }
    let key = format!("{p}ranges.bin");
    let data = pattern(1 << 20, 3);
    s.put(&key, &data, &opts()).await.map_err(|e| e.to_string())?;
    let cases: [(u64, u64, &[u8]); 5] = [
        (0, 10, &data[..10]),
        (1000, 4096, &data[1000..5096]),
        (data.len() as u64 - 7, 100, &data[data.len() - 7..]),
        (data.len() as u64, 10, &[]),
        (data.len() as u64 + 50, 10, &[]),
    ];
    for (offset, length, want) in cases {
        let got = s.get(&key, Some(ByteRange { offset, length })).await.map_err(|e| e.to_string())?;
        ensure(got == want, || format!("range {offset}+{length} returned {} bytes, wanted {}", got.len(), want.len()))?;
    }
    Ok(Outcome::Pass)
}

fn expect_precondition_failed<T: std::fmt::Debug>(
    what: &str,
    r: Result<T, super::error::PluginError>,
) -> Result<(), String> {
    match r {
        Err(e) if matches!(e.storage(), Some(StorageError::PreconditionFailed(_))) => Ok(()),
        other => Err(format!("{what} returned {other:?}, expected precondition-failed")),
    }
}

async fn if_absent(store: &PluginStore, s: &mut Instance, p: &str) -> CaseResultInner {
    let key = format!("{p}cond/absent");
    let mut options = opts();
    options.precondition = Precondition::IfAbsent;
    if !store.capabilities().conditional_writes {
        return match s.put(&key, b"x", &options).await {
            Err(e) if matches!(e.storage(), Some(StorageError::Unsupported(_))) => {
                Ok(Outcome::Skip("plugin declares no conditional writes (and refuses them)".into()))
            }
            other => Err(format!("plugin declares no conditional writes but a conditional put returned {other:?}")),
        };
    }
    s.put(&key, b"first", &options).await.map_err(|e| format!("if-absent on a new key failed: {e}"))?;
    expect_precondition_failed("if-absent on an existing key", s.put(&key, b"second", &options).await)?;
    let back = s.get(&key, None).await.map_err(|e| e.to_string())?;
    ensure(back == b"first", || "a failed if-absent put changed the object".into())?;
    Ok(Outcome::Pass)
}

async fn if_match(store: &PluginStore, s: &mut Instance, p: &str) -> CaseResultInner {
    if !store.capabilities().conditional_writes {
        return Ok(Outcome::Skip("plugin declares no conditional writes".into()));
    }
    let key = format!("{p}cond/match");
    let first = s.put(&key, b"v1", &opts()).await.map_err(|e| e.to_string())?;
    let mut options = opts();
    options.precondition = Precondition::IfMatch(first.etag.clone());
    let second =
        s.put(&key, b"v2", &options).await.map_err(|e| format!("if-match with the current etag failed: {e}"))?;
    // `first.etag` is stale now.
    expect_precondition_failed("if-match with a stale etag", s.put(&key, b"v3", &options).await)?;
    let back = s.get(&key, None).await.map_err(|e| e.to_string())?;
    ensure(back == b"v2", || "a failed if-match put changed the object".into())?;
    options.precondition = Precondition::IfMatch(second.etag);
    expect_precondition_failed("if-match on a missing key", s.put(&format!("{p}cond/none"), b"x", &options).await)?;
    Ok(Outcome::Pass)
}

async fn pagination(s: &mut Instance, p: &str) -> CaseResultInner {
    let base = format!("{p}many/");
    let mut expected: Vec<String> = (0..MANY_KEYS).map(|i| format!("{base}{:04x}/seg-{i}", i * 7919 % 4096)).collect();
    for key in &expected {
        s.put(key, key.as_bytes(), &opts()).await.map_err(|e| e.to_string())?;
    }
    // A sibling whose name sorts inside the range but outside the prefix.
    s.put(&format!("{p}many-not/x"), b"x", &opts()).await.map_err(|e| e.to_string())?;
    expected.sort();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = s.list(&base, cursor.as_deref(), PAGE).await.map_err(|e| e.to_string())?;
        pages += 1;
        ensure(page.objects.len() <= PAGE as usize, || {
            format!("page of {} objects exceeds max-keys {PAGE}", page.objects.len())
        })?;
        for o in &page.objects {
            ensure(o.size == o.key.len() as u64, || format!("listed size {} for {}", o.size, o.key))?;
        }
        seen.extend(page.objects.into_iter().map(|o| o.key));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
        ensure(pages <= MANY_KEYS, || "listing does not terminate".into())?;
    }
    ensure(seen.len() == expected.len(), || {
        format!("listed {} keys over {pages} pages, expected {}", seen.len(), expected.len())
    })?;
    ensure(seen == expected, || "listing is not every key exactly once in ascending order".into())?;
    ensure(pages >= 3, || format!("{MANY_KEYS} keys with max-keys {PAGE} came in {pages} pages"))?;
    Ok(Outcome::Pass)
}

async fn delete(s: &mut Instance, p: &str) -> CaseResultInner {
    let keys: Vec<String> = (0..5).map(|i| format!("{p}del/{i}")).collect();
    for k in &keys {
        s.put(k, b"x", &opts()).await.map_err(|e| e.to_string())?;
    }
    let mut batch = keys[..3].to_vec();
    batch.push(format!("{p}del/never-existed"));
    let failures = s.delete(&batch).await.map_err(|e| e.to_string())?;
    ensure(failures.is_empty(), || format!("delete reported failures: {failures:?}"))?;
    let left = s.list(&format!("{p}del/"), None, 100).await.map_err(|e| e.to_string())?;
    let left: Vec<_> = left.objects.into_iter().map(|o| o.key).collect();
    ensure(left == keys[3..], || format!("after delete, listing shows {left:?}"))?;
    match s.get(&keys[0], None).await {
        Err(e) if e.is_not_found() => Ok(Outcome::Pass),
        other => Err(format!("deleted key still readable: {other:?}")),
    }
}

async fn odd_keys(s: &mut Instance, p: &str) -> CaseResultInner {
    let names = [
        "with space",
        "plus+sign",
        "percent%20",
        "equals=and&amp",
        "tilde~",
        "ünïcødé-日本",
        "a/b/c/d/e/deep",
        "UPPER.lower",
        "semi;colon",
        "quote'single",
    ];
    for name in names {
        let key = format!("{p}odd/{name}");
        s.put(&key, name.as_bytes(), &opts()).await.map_err(|e| format!("put {key:?}: {e}"))?;
        let back = s.get(&key, None).await.map_err(|e| format!("get {key:?}: {e}"))?;
        ensure(back == name.as_bytes(), || format!("{key:?} read back wrong"))?;
    }
    let listed = s.list(&format!("{p}odd/"), None, 100).await.map_err(|e| e.to_string())?;
    ensure(listed.objects.len() == names.len(), || {
        format!("listed {} of {} odd keys", listed.objects.len(), names.len())
    })?;
    Ok(Outcome::Pass)
}

async fn invalid_keys(s: &mut Instance) -> CaseResultInner {
    for key in ["", "/absolute", "a//b", "../escape", "a/./b", "a/../../b"] {
        match s.put(key, b"x", &opts()).await {
            Err(e) if matches!(e.storage(), Some(StorageError::InvalidConfig(_))) => {}
            other => return Err(format!("put of invalid key {key:?} returned {other:?}")),
        }
    }
    Ok(Outcome::Pass)
}

async fn large_object(store: &PluginStore, s: &mut Instance, p: &str) -> CaseResultInner {
    let caps = store.capabilities();
    if !caps.multipart_upload {
        return Ok(Outcome::Skip("plugin declares no multipart upload".into()));
    }
    // Two and a half parts, so the last part is short.
    let part = part_size(caps);
    let data = pattern((part * 5 / 2) as usize, 11);
    let key = format!("{p}large/snapshot.bin");
    let meta = store
        .put_stream(s, &key, &data[..], vec![("kind".into(), "snapshot".into())], Precondition::None)
        .await
        .map_err(|e| e.to_string())?;
    ensure(meta.size == data.len() as u64, || format!("large object size {} != {}", meta.size, data.len()))?;
    // Read back in ranges, as restore does, and compare digests.
    let mut hasher = Sha256::new();
    let chunk = 4 << 20;
    let mut offset = 0u64;
    while offset < data.len() as u64 {
        let got = s.get(&key, Some(ByteRange { offset, length: chunk })).await.map_err(|e| e.to_string())?;
        ensure(!got.is_empty(), || format!("ranged read at {offset} returned nothing"))?;
        offset += got.len() as u64;
        hasher.update(&got);
    }
    ensure(hasher.finalize()[..] == Sha256::digest(&data)[..], || "large object read back differs".into())?;
    Ok(Outcome::Pass)
}

async fn aborted_upload(store: &PluginStore, s: &mut Instance, p: &str) -> CaseResultInner {
    if !store.capabilities().multipart_upload {
        return Ok(Outcome::Skip("plugin declares no multipart upload".into()));
    }
    let key = format!("{p}aborted/object");
    let id = s.create_upload(&key, &opts()).await.map_err(|e| e.to_string())?;
    let data = pattern(store.capabilities().min_part_size.max(1024) as usize, 5);
    let sha = Sha256::digest(&data);
    s.upload_part(&key, &id, 1, &data, Some(&sha)).await.map_err(|e| e.to_string())?;
    s.abort_upload(&key, &id).await.map_err(|e| e.to_string())?;
    match s.head(&key).await {
        Err(e) if e.is_not_found() => {}
        other => return Err(format!("aborted upload produced an object: {other:?}")),
    }
    s.abort_upload(&key, &id).await.map_err(|e| format!("second abort of the same upload failed: {e}"))?;
    Ok(Outcome::Pass)
}

async fn cleanup(store: &PluginStore, p: &str) -> CaseResultInner {
    let mut s = store.session().await.map_err(|e| e.to_string())?;
    let batch = store.capabilities().max_delete_batch.max(1) as usize;
    loop {
        let page = s.list(p, None, 1000).await.map_err(|e| e.to_string())?;
        if page.objects.is_empty() {
            return Ok(Outcome::Pass);
        }
        let keys: Vec<String> = page.objects.into_iter().map(|o| o.key).collect();
        for chunk in keys.chunks(batch) {
            let failures = s.delete(chunk).await.map_err(|e| e.to_string())?;
            ensure(failures.is_empty(), || format!("cleanup could not delete {failures:?}"))?;
        }
    }
}
