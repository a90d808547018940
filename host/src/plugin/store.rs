//! One replica's store, as the rest of sluice sees it: a plugin, a URL and
//! settings, and a sandbox. Instances are created per batch of calls and
//! dropped after; the one serving a busy replica's small uploads is kept
//! warm between them, and freed once the replica is idle, so an idle
//! replica holds no plugin memory.

use super::bindings::{Capabilities, ObjectMeta, PluginInfo, Precondition, PutOptions, StoreConfig, UploadedPart};
use super::error::{ErrorKind, Labels, PluginError, StorageError};
use super::instance::Instance;
use super::retry::retry;
use super::runtime::LoadedPlugin;
use super::sandbox::Sandbox;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Preferred multipart part size; objects up to one part go up in one
/// put. Each part is held twice while it is handed over, once by the host
/// and once in the plugin's memory, and a busy database ships a sync's
/// worth of new pages (~16 MB a second at 10,000 small transactions a
/// second) as one segment: at 8 MiB the two copies were most of the
/// replicator's peak memory under such a load (33 MB peak; 21 MB at 2 MiB
/// parts, 17 MB at 1 MiB, measured side by side). A 1 GB snapshot is then
/// ~1,000 calls of well under a millisecond of overhead each. Plugins
/// with a larger minimum (S3's 5 MiB) get their minimum (`part_size`).
pub const PART_SIZE: u64 = 1 << 20;

/// The part size for a plugin with these capabilities: `PART_SIZE`
/// within the plugin's bounds.
pub fn part_size(caps: &Capabilities) -> u64 {
    PART_SIZE.clamp(caps.min_part_size.max(1), caps.max_part_size.max(1))
}

/// The largest object a store without multipart upload takes, in one put.
pub fn largest_single_put(caps: &Capabilities) -> u64 {
    caps.max_object_size.unwrap_or(caps.max_put_size).max(caps.max_put_size)
}

/// Objects up to this size go up through a `small_io_session`: a steady
/// level-0 segment is tens of KiB, a snapshot part is megabytes.
pub const SMALL_IO_BYTES: u64 = 1 << 20;
/// How long a small-io session stays warm after its last use. A database
/// written to steadily uploads every sync interval (1 s by default) and
/// so reuses one instance, saving the instantiation, the `open` call and
/// the page faults of fresh memory on every sync; a quiet one frees it
/// within seconds.
pub const WARM_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

/// A replica's store.
pub struct PluginStore {
    plugin: Arc<LoadedPlugin>,
    config: StoreConfig,
    sandbox: Sandbox,
    labels: Arc<Labels>,
    /// The replica's age keys, if its segments are encrypted (decision
    /// 20). The plugin never sees them: `replica::client` seals what goes
    /// up and opens what comes back.
    keys: Option<Arc<crate::segment::sealed::Keys>>,
    /// A small-io session parked for reuse, and when it was parked.
    warm: std::sync::Mutex<Option<(Instance, std::time::Instant)>>,
    /// `part-size` and `concurrency` of large uploads.
    tuning: UploadTuning,
    /// What the opened store can do, learnt at its first session.
    caps: std::sync::OnceLock<Capabilities>,
    /// The URL as messages show it (`super::redact_url`), once.
    shown_url: String,
}

/// A store's capabilities within its plugin's: a store may do less than
/// its plugin declared, never more. Part bounds that no longer meet turn
/// multipart off rather than leave an empty range (which `clamp` would
/// panic on); a part count of 0 means no limit.
fn narrowed(plugin: &Capabilities, store: Capabilities) -> Capabilities {
    let fewest = |a: u32, b: u32| if a == 0 || b == 0 { a.max(b) } else { a.min(b) };
    let min_part_size = plugin.min_part_size.max(store.min_part_size);
    let max_part_size = plugin.max_part_size.min(store.max_part_size);
    Capabilities {
        conditional_writes: plugin.conditional_writes && store.conditional_writes,
        ranged_reads: plugin.ranged_reads && store.ranged_reads,
        multipart_upload: plugin.multipart_upload && store.multipart_upload && min_part_size <= max_part_size,
        max_object_size: match (plugin.max_object_size, store.max_object_size) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
        max_put_size: plugin.max_put_size.min(store.max_put_size),
        min_part_size: min_part_size.min(max_part_size),
        max_part_size,
        max_parts: fewest(plugin.max_parts, store.max_parts),
        max_delete_batch: plugin.max_delete_batch.min(store.max_delete_batch).max(1),
        max_list_page: plugin.max_list_page.min(store.max_list_page).max(1),
    }
}

/// Most parts of one upload in flight at once (`concurrency`): each holds
/// a part in the host and in its plugin instance.
pub const MAX_UPLOAD_CONCURRENCY: usize = 16;

/// Litestream's `part-size` and `concurrency` (settings, or the URL's
/// `partSize`/`concurrency`), for any plugin with multipart uploads.
/// Unparsable values are left to the plugin, which refuses them by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadTuning {
    pub part_size: Option<u64>,
    /// Parts in flight at once; 1 (one at a time) unless asked: more
    /// holds more parts in memory, and pays only on a high-latency store.
    pub concurrency: usize,
}

impl UploadTuning {
    pub fn from_config(url: &str, settings: &[(String, String)]) -> UploadTuning {
        let query: Vec<(String, String)> =
            url::Url::parse(url).map(|u| u.query_pairs().into_owned().collect()).unwrap_or_default();
        let look = |setting: &str, param: &str| {
            let from_settings = settings.iter().find(|(k, _)| k == setting).map(|(_, v)| v.trim().to_string());
            from_settings.or_else(|| query.iter().find(|(k, _)| k == param).map(|(_, v)| v.clone()))
        };
        let part_size = look("part-size", "partSize").and_then(|v| v.parse::<u64>().ok()).filter(|&n| n > 0);
        let concurrency = look("concurrency", "concurrency").and_then(|v| v.parse::<usize>().ok()).unwrap_or(1);
        UploadTuning { part_size, concurrency: concurrency.clamp(1, MAX_UPLOAD_CONCURRENCY) }
    }
}

impl PluginStore {
    /// `url` must already be normalised (see [`super::normalize_url`]). The
    /// plugin is given only the settings it declares (decision 34); the
    /// others are warned about here, and a missing required one fails.
    pub fn new(
        plugin: Arc<LoadedPlugin>,
        url: String,
        settings: Vec<(String, String)>,
        sandbox: Sandbox,
        labels: Labels,
    ) -> Result<Self, PluginError> {
        let labels = Arc::new(Labels { plugin: plugin.info().name.clone(), ..labels });
        let tuning = UploadTuning::from_config(&url, &settings);
        let checked =
            super::settings::check(plugin.declared_settings(), &url, settings).map_err(|msg| PluginError {
                labels: labels.clone(),
                op: "open".into(),
                kind: ErrorKind::Storage(StorageError::InvalidConfig(msg)),
            })?;
        for warning in &checked.warnings {
            tracing::warn!(plugin = %labels.plugin, database = %labels.database, replica = %labels.replica, "{warning}");
        }
        let settings = checked.settings;
        let shown_url = super::redact_url(&url);
        Ok(PluginStore {
            tuning,
            plugin,
            config: StoreConfig { url, settings },
            sandbox,
            labels,
            keys: None,
            warm: Default::default(),
            caps: std::sync::OnceLock::new(),
            shown_url,
        })
    }

    /// Encrypt this replica's segments with `keys` (decision 20).
    pub fn with_keys(mut self, keys: Option<Arc<crate::segment::sealed::Keys>>) -> Self {
        self.keys = keys;
        self
    }

    /// The replica's age keys, if it is encrypted.
    pub fn keys(&self) -> Option<&Arc<crate::segment::sealed::Keys>> {
        self.keys.as_ref()
    }

    pub fn info(&self) -> &PluginInfo {
        self.plugin.info()
    }

    /// What this store can do: its plugin's capabilities narrowed by the
    /// store's own answer once a session has asked (`learn_capabilities`;
    /// the replica does so before it starts).
    pub fn capabilities(&self) -> &Capabilities {
        // Every path opens a session (or `learn_capabilities`) before it
        // decides anything by them; the plugin's are only a fallback.
        debug_assert!(self.caps.get().is_some(), "capabilities read before the store was asked");
        self.caps.get().unwrap_or(&self.info().capabilities)
    }

    /// Ask the store what it can do, unless already known.
    pub async fn learn_capabilities(&self) -> Result<(), PluginError> {
        if self.caps.get().is_none() {
            let session = self.small_io_session().await?;
            self.recycle(session);
        }
        Ok(())
    }

    /// This replica's multipart part size: its `part-size` if set, else
    /// [`PART_SIZE`], within the plugin's bounds.
    pub fn part_size(&self) -> u64 {
        let caps = self.capabilities();
        self.tuning.part_size.unwrap_or(PART_SIZE).clamp(caps.min_part_size.max(1), caps.max_part_size.max(1))
    }

    pub fn labels(&self) -> &Arc<Labels> {
        &self.labels
    }

    /// The replica URL as messages show it: any password redacted
    /// (`super::redact_url`).
    pub fn url(&self) -> &str {
        &self.shown_url
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// A fresh instance with this store opened, for a batch of calls.
    pub async fn session(&self) -> Result<Instance, PluginError> {
        self.open_session(&self.sandbox).await
    }

    /// A session for calls that each move at most `SMALL_IO_BYTES`: its
    /// file operations run inline (see `Sandbox::inline_io`). The session
    /// parked by `recycle` is reused while warm.
    pub async fn small_io_session(&self) -> Result<Instance, PluginError> {
        if let Some(instance) = self.take_warm() {
            return Ok(instance);
        }
        self.open_session(&Sandbox { inline_io: true, ..self.sandbox.clone() }).await
    }

    fn take_warm(&self) -> Option<Instance> {
        let (mut instance, parked) = self.warm.lock().ok()?.take()?;
        if parked.elapsed() > WARM_IDLE {
            return None;
        }
        // Without a live slot free now the warm instance is dropped,
        // freeing its memory and warm slot, and the caller waits for a
        // slot like any new session.
        instance.set_slot(self.plugin.try_live_slot()?);
        Some(instance)
    }

    /// Park a small-io session for the next one, if it is healthy and a
    /// warm slot is free; otherwise it is simply dropped.
    pub fn recycle(&self, mut instance: Instance) {
        if instance.is_poisoned() || !instance.sandbox().inline_io {
            return;
        }
        let Some(slot) = self.plugin.try_warm_slot() else { return };
        instance.set_slot(slot);
        if let Ok(mut warm) = self.warm.lock() {
            *warm = Some((instance, std::time::Instant::now()));
        }
    }

    /// Whether a session is parked warm (for tests and status).
    pub fn holds_warm_instance(&self) -> bool {
        self.warm.lock().is_ok_and(|w| w.is_some())
    }

    /// How long until the parked session, if any, is due to be freed.
    pub fn warm_expires_in(&self) -> Option<std::time::Duration> {
        let warm = self.warm.lock().ok()?;
        warm.as_ref().map(|(_, parked)| WARM_IDLE.saturating_sub(parked.elapsed()))
    }

    /// Free the parked session once it has been idle for `WARM_IDLE`.
    pub fn expire_warm(&self) {
        let expired = self.warm.lock().ok().and_then(|mut w| match &*w {
            Some((_, parked)) if parked.elapsed() > WARM_IDLE => w.take(),
            _ => None,
        });
        drop(expired);
    }

    async fn open_session(&self, sandbox: &Sandbox) -> Result<Instance, PluginError> {
        let mut instance = self.plugin.instantiate(sandbox, self.labels.clone()).await?;
        instance.open(&self.config, &self.shown_url).await?;
        if self.caps.get().is_none() {
            let plugin = &self.info().capabilities;
            let caps = instance.capabilities().await?.map_or(*plugin, |c| narrowed(plugin, c));
            let _ = self.caps.set(caps);
        }
        Ok(instance)
    }

    /// Upload everything `reader` yields as one object, in parts when it
    /// is larger than a single put: memory stays at one part. The SHA-256
    /// of each body is computed here, natively, and handed to the plugin.
    pub async fn put_stream(
        &self,
        session: &mut Instance,
        key: &str,
        mut reader: impl AsyncRead + Unpin,
        metadata: Vec<(String, String)>,
        precondition: Precondition,
    ) -> Result<ObjectMeta, PluginError> {
        let caps = self.capabilities();
        let part_size = self.part_size();
        let single_limit = part_size.min(caps.max_put_size).max(1);
        let first = read_up_to(&mut reader, single_limit + 1, key, &self.labels).await?;
        if first.len() as u64 <= single_limit || !caps.multipart_upload {
            let mut body = first;
            if !caps.multipart_upload {
                // No multipart: the object must fit one put, up to the
                // plugin's largest object (read one byte past it to know).
                let largest = largest_single_put(caps);
                let rest = largest.saturating_sub(body.len() as u64) + 1;
                (&mut reader).take(rest).read_to_end(&mut body).await.map_err(|e| io_error(&self.labels, key, e))?;
                if body.len() as u64 > largest {
                    return Err(too_large(&self.labels, key, largest));
                }
            }
            let options = PutOptions { precondition, metadata, content_sha256: Some(Sha256::digest(&body).to_vec()) };
            let body = bytes::Bytes::from(body);
            return retry!(session.put_shared(key, body.clone(), &options));
        }
        let options = PutOptions { precondition, metadata, content_sha256: None };
        let upload_id = retry!(session.create_upload(key, &options))?;
        let result = self.upload_parts(session, key, &upload_id, first, reader, part_size).await;
        match result {
            Ok(parts) => retry!(session.complete_upload(key, &upload_id, &parts)),
            Err(e) => {
                // Free the parts; if the session died, use a new one.
                let aborted = if session.is_poisoned() {
                    match self.session().await {
                        Ok(mut s) => s.abort_upload(key, &upload_id).await,
                        Err(e) => Err(e),
                    }
                } else {
                    session.abort_upload(key, &upload_id).await
                };
                if let Err(abort) = aborted {
                    tracing::warn!("could not abort upload {upload_id} of {key}: {abort}");
                }
                Err(e)
            }
        }
    }

    /// Upload the stream in parts of `part_size` (starting with the bytes
    /// already read into `carry`), up to `concurrency` at once: `session`
    /// plus extra sessions taken only while a live slot is free, so the
    /// parallelism never waits for a slot (memory: one part per session).
    async fn upload_parts(
        &self,
        session: &mut Instance,
        key: &str,
        upload_id: &str,
        mut carry: Vec<u8>,
        mut reader: impl AsyncRead + Unpin,
        part_size: u64,
    ) -> Result<Vec<UploadedPart>, PluginError> {
        let mut idle = vec![Slot::Main(session)];
        let mut running = futures::stream::FuturesUnordered::new();
        let (mut done, mut number, mut read_all) = (Vec::new(), 0u32, false);
        // The first failure stops new parts; the parts in flight are waited
        // for, never cancelled mid-call (a plugin call dropped half-way
        // could leave its instance, the caller's session among them, in a
        // state the abort that follows must not meet).
        let mut failure: Option<PluginError> = None;
        loop {
            while failure.is_none() && !read_all && running.len() < self.tuning.concurrency {
                let Some(slot) = self.free_slot(&mut idle).await else { break };
                let part = self.next_part(&mut carry, &mut reader, part_size as usize, key).await;
                let part = part.and_then(|p| {
                    let counted = p.as_ref().map(|_| self.check_part_count(number + 1, part_size, key));
                    counted.transpose().map(|_| p)
                });
                match part {
                    Ok(Some(part)) => {
                        number += 1;
                        running.push(send_part(slot, key, upload_id, number, part));
                    }
                    Ok(None) => {
                        read_all = true;
                        idle.push(slot);
                    }
                    Err(e) => {
                        failure = Some(e);
                        idle.push(slot);
                    }
                }
            }
            match futures::StreamExt::next(&mut running).await {
                Some((slot, result)) => {
                    match result {
                        Ok(part) => done.push(part),
                        Err(e) => failure = failure.or(Some(e)),
                    }
                    idle.push(slot);
                }
                None => break,
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        done.sort_by_key(|p: &UploadedPart| p.part_number);
        Ok(done)
    }

    /// An idle session, or a new one if a live slot is free now.
    async fn free_slot<'s>(&self, idle: &mut Vec<Slot<'s>>) -> Option<Slot<'s>> {
        if let Some(slot) = idle.pop() {
            return Some(slot);
        }
        match self.plugin.instantiate_if_free(&self.sandbox, self.labels.clone()).await? {
            Ok(mut instance) => {
                instance.open(&self.config, &self.shown_url).await.ok().map(|()| Slot::Extra(Box::new(instance)))
            }
            Err(_) => None,
        }
    }

    /// The next part of the stream: `carry` (bytes read ahead) topped up
    /// to `part_size`; `None` at the end.
    async fn next_part(
        &self,
        carry: &mut Vec<u8>,
        reader: &mut (impl AsyncRead + Unpin),
        part_size: usize,
        key: &str,
    ) -> Result<Option<Vec<u8>>, PluginError> {
        if carry.len() < part_size {
            let want = part_size - carry.len();
            carry.reserve_exact(want);
            reader.take(want as u64).read_to_end(carry).await.map_err(|e| io_error(&self.labels, key, e))?;
        }
        if carry.is_empty() {
            return Ok(None);
        }
        let rest = carry.split_off(carry.len().min(part_size));
        Ok(Some(std::mem::replace(carry, rest)))
    }

    fn check_part_count(&self, number: u32, part_size: u64, key: &str) -> Result<(), PluginError> {
        let max_parts = self.capabilities().max_parts;
        if max_parts == 0 || number <= max_parts {
            return Ok(());
        }
        Err(PluginError {
            labels: self.labels.clone(),
            op: format!("upload {key}"),
            kind: super::error::StorageError::InvalidConfig(format!(
                "object needs more than the plugin's max-parts ({max_parts}) parts of {part_size} bytes; raise part-size"
            ))
            .into(),
        })
    }
}

/// A session uploading parts: the caller's, or an extra one of its own.
enum Slot<'s> {
    Main(&'s mut Instance),
    Extra(Box<Instance>),
}

impl Slot<'_> {
    fn get(&mut self) -> &mut Instance {
        match self {
            Slot::Main(i) => i,
            Slot::Extra(i) => i,
        }
    }
}

/// Upload one part on `slot`, giving the slot back with the result.
async fn send_part<'s>(
    mut slot: Slot<'s>,
    key: &str,
    upload_id: &str,
    number: u32,
    part: Vec<u8>,
) -> (Slot<'s>, Result<UploadedPart, PluginError>) {
    let sha = Sha256::digest(&part);
    let session = slot.get();
    let result = retry!(session.upload_part(key, upload_id, number, &part, Some(&sha)));
    (slot, result)
}

async fn read_up_to(
    reader: &mut (impl AsyncRead + Unpin),
    limit: u64,
    key: &str,
    labels: &Arc<Labels>,
) -> Result<Vec<u8>, PluginError> {
    let io = |e| io_error(labels, key, e);
    // Grown as data arrives up to a first chunk: reserving a whole part up
    // front mapped it for every few-KiB segment. Past that, room for the
    // rest at once: grown by doubling, a part's buffer ended up twice the
    // part's size.
    let mut buf = Vec::new();
    let first = limit.min(READ_FIRST_CHUNK);
    (&mut *reader).take(first).read_to_end(&mut buf).await.map_err(io)?;
    if (buf.len() as u64) < first {
        return Ok(buf);
    }
    let rest = limit - first;
    // The slack keeps the reader's end-of-data probe from growing it.
    buf.reserve_exact(rest as usize + READ_SLACK);
    reader.take(rest).read_to_end(&mut buf).await.map_err(io)?;
    Ok(buf)
}

/// `read_up_to` grows its buffer as data arrives up to this many bytes.
const READ_FIRST_CHUNK: u64 = 64 << 10;
/// Spare room `read_up_to` reserves past its limit: tokio's `read_to_end`
/// asks for 32 bytes more whenever the buffer is full.
const READ_SLACK: usize = 64;

/// An object larger than a plugin without multipart uploads can store:
/// the operator's to solve (another store), said with the limit.
fn too_large(labels: &Arc<Labels>, key: &str, largest: u64) -> PluginError {
    let msg = format!(
        "the object is larger than the {} MiB this plugin stores in one piece (it has no multipart upload); replicate to a store whose plugin offers multipart uploads (S3, file)",
        largest >> 20
    );
    PluginError {
        labels: labels.clone(),
        op: format!("put {key}"),
        kind: super::error::StorageError::Unsupported(msg).into(),
    }
}

fn io_error(labels: &Arc<Labels>, key: &str, e: std::io::Error) -> PluginError {
    PluginError {
        labels: labels.clone(),
        op: format!("read local data for {key}"),
        kind: super::error::StorageError::Permanent(e.to_string()).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::{Capabilities, MAX_UPLOAD_CONCURRENCY, UploadTuning, narrowed};

    #[test]
    fn a_store_narrows_its_plugins_capabilities_into_bounds_that_hold() {
        let plugin = Capabilities {
            conditional_writes: true,
            ranged_reads: true,
            multipart_upload: true,
            max_object_size: None,
            max_put_size: 64 << 20,
            min_part_size: 5 << 20,
            max_part_size: 64 << 20,
            max_parts: 0,
            max_delete_batch: 1000,
            max_list_page: 1000,
        };
        let store = Capabilities { conditional_writes: false, max_part_size: 1 << 20, max_parts: 100, ..plugin };
        let n = narrowed(&plugin, store);
        assert!(!n.conditional_writes && !n.multipart_upload, "{n:?}");
        assert!(n.min_part_size <= n.max_part_size, "{n:?}");
        assert_eq!(n.max_parts, 100, "0 is no limit, not the fewest");
        assert_eq!(format!("{:?}", narrowed(&plugin, plugin)), format!("{plugin:?}"));
    }

    #[test]
    fn part_size_and_concurrency_come_from_settings_or_the_url() {
        let s = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let t = UploadTuning::from_config("s3://b/p", &s(&[("part-size", "5242880"), ("concurrency", "4")]));
        assert_eq!(t, UploadTuning { part_size: Some(5 << 20), concurrency: 4 });
        let t = UploadTuning::from_config("s3://b/p?partSize=8388608&concurrency=99", &[]);
        assert_eq!(t, UploadTuning { part_size: Some(8 << 20), concurrency: MAX_UPLOAD_CONCURRENCY });
        let t = UploadTuning::from_config("s3://b/p?concurrency=3", &s(&[("concurrency", "2")]));
        assert_eq!(t.concurrency, 2, "a setting wins over the URL");
        assert_eq!(UploadTuning::from_config("s3://b/p", &[]), UploadTuning { part_size: None, concurrency: 1 });
        assert_eq!(UploadTuning::from_config("s3://b/p", &s(&[("concurrency", "0")])).concurrency, 1);
    }
}
