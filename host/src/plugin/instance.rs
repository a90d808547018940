//! One live, sandboxed plugin instance with an opened store: the typed
//! calls of the contract, each armed with a fresh CPU budget and turned
//! into a `PluginError` that names plugin, database and replica.

use super::bindings::{
    ByteRange, Capabilities, DeleteFailure, ListPage, ObjectMeta, Plugin as Bindings, PluginInfo, PutOptions,
    StoreConfig, UploadedPart, WitError,
};
use super::error::{ErrorKind, Labels, PluginError, StorageError};
use super::runtime::Permit;
use super::sandbox::{HostState, Sandbox};
use crate::metrics;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tokio::runtime::Handle;
use wasmtime::Store;
use wasmtime::component::ResourceAny;

/// A plugin instance. Dropping it frees its memory and its slot.
pub struct Instance {
    /// `None` only if a call's thread died with it (then it is poisoned).
    core: Option<Core>,
    sandbox: Sandbox,
    labels: Arc<Labels>,
    handle: Option<ResourceAny>,
    /// The replica URL as given to `open`, when it differs from the way
    /// messages may show it (a password in it): a plugin that quotes it
    /// in an error has it redacted (`super::redact_url`).
    secret_url: Option<(String, String)>,
    poisoned: bool,
    /// A live slot while in use, a warm one while parked for reuse.
    slot: Permit,
}

/// The wasmtime half of an instance: what a call needs, and what moves to
/// a blocking thread for the call's duration (see `Instance::run_blocking`).
pub(super) struct Core {
    store: Store<HostState>,
    bindings: Bindings,
}

/// A call in progress, borrowing the instance's core.
type CallFuture<'a, R> = Pin<Box<dyn Future<Output = wasmtime::Result<R>> + Send + 'a>>;

/// Turn a wasmtime error from a call into what actually happened.
pub(super) fn classify_trap(state: &HostState, e: wasmtime::Error, sandbox: &Sandbox) -> ErrorKind {
    if state.limiter.memory_exceeded {
        return ErrorKind::MemoryLimit { limit_mib: sandbox.memory_bytes >> 20 };
    }
    if state.cpu_exceeded {
        return ErrorKind::CpuLimit { budget_ms: sandbox.cpu_budget.as_millis() as u64 };
    }
    let trap = match e.downcast_ref::<wasmtime::Trap>() {
        Some(t) => t.to_string(),
        None => super::sandbox::one_line(&format!("{e:#}")),
    };
    ErrorKind::Trap { trap, stderr: state.stderr_tail() }
}

/// Run a call body against the core, on this task or (for
/// `Instance::on_own_thread`) on a blocking thread. The body is written
/// once against borrowed arguments; for the blocking thread each
/// `arg = owned` is copied first and borrowed again there.
macro_rules! invoke {
    ($self:ident, [$($arg:ident = $owned:expr),*], |$b:ident, $s:ident| $body:expr) => {
        if $self.on_own_thread() {
            $(let $arg = $owned;)*
            $self
                .run_blocking(move |core: &mut Core| -> CallFuture<'_, _> {
                    Box::pin(async move {
                        $(let $arg = &$arg;)*
                        let ($b, $s) = (&core.bindings, &mut core.store);
                        $body.await
                    })
                })
                .await
        } else {
            match $self.core.as_mut() {
                Some(core) => {
                    let ($b, $s) = (&core.bindings, &mut core.store);
                    Ok($body.await)
                }
                None => Err(ErrorKind::Poisoned),
            }
        }
    };
}

/// One typed call on the opened store, with metrics and error naming.
macro_rules! call {
    ($self:ident, $kind:literal, $op:expr, [$($arg:ident = $owned:expr),*], |$b:ident, $s:ident, $h:ident| $body:expr) => {{
        let op = $op;
        if $self.poisoned {
            return Err($self.error(op, ErrorKind::Poisoned));
        }
        let $h = $self.handle.ok_or_else(|| $self.error(op.clone(), ErrorKind::Poisoned))?;
        let started = $self.arm();
        let result = invoke!($self, [$($arg = $owned),*], |$b, $s| $body);
        $self.settle($kind, started, op, result)
    }};
}

impl Instance {
    pub(super) fn new(
        store: Store<HostState>,
        bindings: Bindings,
        sandbox: Sandbox,
        labels: Arc<Labels>,
        permit: Permit,
    ) -> Self {
        let core = Some(Core { store, bindings });
        Instance { core, sandbox, labels, handle: None, secret_url: None, poisoned: false, slot: permit }
    }

    /// Trade the instance's slot (live for warm, or back).
    pub(super) fn set_slot(&mut self, slot: Permit) {
        self.slot = slot;
    }

    pub(super) fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    fn error(&self, op: impl Into<String>, kind: ErrorKind) -> PluginError {
        PluginError { labels: self.labels.clone(), op: op.into(), kind }
    }

    /// Whether calls run on a thread of their own. A plugin with a
    /// directory spends a small call (a level-0 segment's put) in a dozen
    /// small file operations, which wasmtime-wasi would each send to the
    /// blocking pool and back (two thread wake-ups per operation: most of
    /// the replicator's steady CPU time). For a session opened with
    /// `Sandbox::inline_io` the whole call goes to a blocking thread once
    /// and its file operations run inline there: a slow disk still holds
    /// up only this call, and the caller's task stays free to poll its
    /// other futures meanwhile. Network plugins and bulk transfers stay
    /// plain async.
    fn on_own_thread(&self) -> bool {
        self.sandbox.inline_io && self.sandbox.directory.is_some()
    }

    /// Run `call` on a blocking thread, the core moved there and back.
    async fn run_blocking<R: Send + 'static>(
        &mut self,
        call: impl for<'a> FnOnce(&'a mut Core) -> CallFuture<'a, R> + Send + 'static,
    ) -> Result<wasmtime::Result<R>, ErrorKind> {
        let mut core = self.core.take().ok_or(ErrorKind::Poisoned)?;
        let handle = Handle::current();
        let joined = tokio::task::spawn_blocking(move || {
            let result = handle.block_on(call(&mut core));
            (core, result)
        })
        .await;
        match joined {
            Ok((core, result)) => {
                self.core = Some(core);
                Ok(result)
            }
            Err(e) => {
                Err(ErrorKind::Trap { trap: format!("the thread running the call failed: {e}"), stderr: String::new() })
            }
        }
    }

    /// Give the next call a full CPU budget: the deadline counts from when
    /// it is set, so it is re-armed before every call.
    fn arm(&mut self) -> Instant {
        if let Some(core) = self.core.as_mut() {
            // Per-call verdicts start clean: a handled allocation failure or
            // a refused request earlier must not colour a later error.
            let state = core.store.data_mut();
            state.ticks = 0;
            state.cpu_exceeded = false;
            state.limiter.memory_exceeded = false;
            state.hooks.refused.clear();
            core.store.set_epoch_deadline(1);
        }
        Instant::now()
    }

    fn settle<T>(
        &mut self,
        kind: &str,
        started: Instant,
        op: String,
        result: Result<wasmtime::Result<Result<T, WitError>>, ErrorKind>,
    ) -> Result<T, PluginError> {
        let l = &self.labels;
        let labels = [l.plugin.as_str(), metrics::counted(&l.database), l.replica.as_str(), kind];
        metrics::PLUGIN_CALLS_TOTAL.with_label_values(&labels).inc();
        metrics::PLUGIN_CALL_DURATION.with_label_values(&labels).observe(started.elapsed().as_secs_f64());
        let outcome = match result {
            Ok(result) => self.classify(op, result),
            Err(kind) => {
                // The call's thread died, and the instance with it.
                self.poisoned = true;
                Err(self.error(op, kind))
            }
        };
        if let Err(e) = &outcome {
            let kind_label = match &e.kind {
                ErrorKind::Storage(s) => s.kind_name(),
                ErrorKind::MemoryLimit { .. } => "memory-limit",
                ErrorKind::CpuLimit { .. } => "cpu-limit",
                ErrorKind::Trap { .. } => "trap",
                ErrorKind::Load(_) => "load",
                ErrorKind::Poisoned => "poisoned",
            };
            let l = &self.labels;
            metrics::PLUGIN_ERRORS_TOTAL
                .with_label_values(&[
                    l.plugin.as_str(),
                    metrics::counted(&l.database),
                    l.replica.as_str(),
                    kind,
                    kind_label,
                ])
                .inc();
        }
        outcome
    }

    fn classify<T>(&mut self, op: String, result: wasmtime::Result<Result<T, WitError>>) -> Result<T, PluginError> {
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let mut storage = StorageError::from(e);
                if let Some((raw, shown)) = &self.secret_url {
                    storage.map_message(|m| m.replace(raw.as_str(), shown));
                }
                let refused = self.core.as_ref().and_then(|c| c.store.data().hooks.refused.last());
                if let (StorageError::AccessDenied(msg), Some(host)) = (&mut storage, refused) {
                    msg.push_str(&format!(" [host refused {host}; allowed: {:?}]", self.sandbox.allow_hosts));
                }
                Err(self.error(op, ErrorKind::Storage(storage)))
            }
            Err(e) => {
                // After a trap the instance's state is undefined.
                self.poisoned = true;
                let kind = match self.core.as_ref() {
                    Some(core) => classify_trap(core.store.data(), e, &self.sandbox),
                    None => ErrorKind::Poisoned,
                };
                Err(self.error(op, kind))
            }
        }
    }

    /// What the plugin declares.
    pub async fn info(&mut self) -> Result<PluginInfo, PluginError> {
        let started = self.arm();
        let result = invoke!(self, [], |b, s| b.call_info(s));
        self.settle("info", started, "info".into(), result.map(|r| r.map(Ok)))
    }

    /// Open the store this instance will serve; `shown_url` is its URL as
    /// messages show it (`super::redact_url`).
    pub async fn open(&mut self, config: &StoreConfig, shown_url: &str) -> Result<(), PluginError> {
        self.secret_url = (shown_url != config.url).then(|| (config.url.clone(), shown_url.to_string()));
        let started = self.arm();
        let result = invoke!(self, [config = config.clone()], |b, s| b.call_open(s, config));
        self.handle = Some(self.settle("open", started, "open".into(), result)?);
        Ok(())
    }

    /// What the opened store can do, if its plugin says (contract 0.2.0).
    pub async fn capabilities(&mut self) -> Result<Option<Capabilities>, PluginError> {
        call!(self, "capabilities", "capabilities".to_string(), [], |b, s, h| async {
            b.call_capabilities(s, h).await.map(Ok)
        })
    }

    pub async fn put(&mut self, key: &str, data: &[u8], options: &PutOptions) -> Result<ObjectMeta, PluginError> {
        self.put_shared(key, bytes::Bytes::copy_from_slice(data), options).await
    }

    /// `put` of a body the caller hands over: a call that runs on its own
    /// thread takes it there without a copy (a level-0 segment of up to a
    /// MiB, uploaded every sync of a busy database).
    pub async fn put_shared(
        &mut self,
        key: &str,
        data: bytes::Bytes,
        options: &PutOptions,
    ) -> Result<ObjectMeta, PluginError> {
        call!(
            self,
            "put",
            format!("put {key}"),
            [key = key.to_string(), data = data, options = options.clone()],
            |b, s, h| b.call_put(s, h, key, &data[..], options)
        )
    }

    pub async fn get(&mut self, key: &str, range: Option<ByteRange>) -> Result<Vec<u8>, PluginError> {
        call!(self, "get", format!("get {key}"), [key = key.to_string()], |b, s, h| b.call_get(s, h, key, range))
    }

    pub async fn head(&mut self, key: &str) -> Result<ObjectMeta, PluginError> {
        call!(self, "head", format!("head {key}"), [key = key.to_string()], |b, s, h| b.call_head(s, h, key))
    }

    // `call!` expands the body twice: `cursor` is an `Option<&str>` here,
    // but an `&Option<String>` in the copy for a blocking thread, which
    // needs the `as_deref`.
    #[allow(clippy::needless_option_as_deref)]
    pub async fn list(&mut self, prefix: &str, cursor: Option<&str>, max_keys: u32) -> Result<ListPage, PluginError> {
        call!(
            self,
            "list",
            if prefix.is_empty() { "list".to_string() } else { format!("list {prefix}") },
            [prefix = prefix.to_string(), cursor = cursor.map(str::to_string)],
            |b, s, h| b.call_list(s, h, prefix, cursor.as_deref(), max_keys)
        )
    }

    pub async fn delete(&mut self, keys: &[String]) -> Result<Vec<DeleteFailure>, PluginError> {
        call!(self, "delete", format!("delete {} keys", keys.len()), [keys = keys.to_vec()], |b, s, h| b
            .call_delete(s, h, keys))
    }

    pub async fn create_upload(&mut self, key: &str, options: &PutOptions) -> Result<String, PluginError> {
        call!(
            self,
            "create-upload",
            format!("create-upload {key}"),
            [key = key.to_string(), options = options.clone()],
            |b, s, h| b.call_create_upload(s, h, key, options)
        )
    }

    // As for `list`: `sha256` is an `&Option<Vec<u8>>` on a blocking thread.
    #[allow(clippy::needless_option_as_deref)]
    pub async fn upload_part(
        &mut self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        data: &[u8],
        sha256: Option<&[u8]>,
    ) -> Result<UploadedPart, PluginError> {
        call!(
            self,
            "upload-part",
            format!("upload-part {key} #{part_number}"),
            [
                key = key.to_string(),
                upload_id = upload_id.to_string(),
                data = data.to_vec(),
                sha256 = sha256.map(<[u8]>::to_vec)
            ],
            |b, s, h| b.call_upload_part(s, h, key, upload_id, part_number, data, sha256.as_deref())
        )
    }

    pub async fn complete_upload(
        &mut self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
    ) -> Result<ObjectMeta, PluginError> {
        call!(
            self,
            "complete-upload",
            format!("complete-upload {key}"),
            [key = key.to_string(), upload_id = upload_id.to_string(), parts = parts.to_vec()],
            |b, s, h| b.call_complete_upload(s, h, key, upload_id, parts)
        )
    }

    pub async fn abort_upload(&mut self, key: &str, upload_id: &str) -> Result<(), PluginError> {
        call!(
            self,
            "abort-upload",
            format!("abort-upload {key}"),
            [key = key.to_string(), upload_id = upload_id.to_string()],
            |b, s, h| b.call_abort_upload(s, h, key, upload_id)
        )
    }

    /// Whether an earlier call trapped (the instance must be replaced).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}
