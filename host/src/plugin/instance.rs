//! One live, sandboxed plugin instance with an opened store: the typed
//! calls of the contract, each armed with a fresh CPU budget and turned
//! into a `PluginError` that names plugin, database and replica.

use super::bindings::{
    ByteRange, DeleteFailure, ListPage, ObjectMeta, Plugin as Bindings, PluginInfo, PutOptions, StoreConfig,
    UploadedPart, WitError,
};
use super::error::{ErrorKind, Labels, PluginError, StorageError};
use super::runtime::Permit;
use super::sandbox::{HostState, Sandbox};
use crate::metrics;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::Store;
use wasmtime::component::ResourceAny;

/// A plugin instance. Dropping it frees its memory and its slot.
pub struct Instance {
    store: Store<HostState>,
    bindings: Bindings,
    sandbox: Sandbox,
    labels: Arc<Labels>,
    handle: Option<ResourceAny>,
    poisoned: bool,
    _permit: Permit,
}

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
        None => format!("{e:#}"),
    };
    ErrorKind::Trap { trap, stderr: state.stderr_tail() }
}

macro_rules! call {
    ($self:ident, $kind:literal, $op:expr, |$b:ident, $s:ident, $h:ident| $body:expr) => {{
        let op = $op;
        if $self.poisoned {
            return Err($self.error(op, ErrorKind::Poisoned));
        }
        let $h = $self.handle.ok_or_else(|| $self.error(op.clone(), ErrorKind::Poisoned))?;
        let started = $self.arm();
        let $b = &$self.bindings;
        let $s = &mut $self.store;
        let result = $body.await;
        $self.settle($kind, started, op, result)
    }};
}

impl Instance {
    pub(super) fn new(store: Store<HostState>, bindings: Bindings, sandbox: Sandbox, labels: Arc<Labels>, permit: Permit) -> Self {
        Instance { store, bindings, sandbox, labels, handle: None, poisoned: false, _permit: permit }
    }

    fn error(&self, op: impl Into<String>, kind: ErrorKind) -> PluginError {
        PluginError { labels: self.labels.clone(), op: op.into(), kind }
    }

    /// Give the next call a full CPU budget: the deadline counts from when
    /// it is set, so it is re-armed before every call.
    fn arm(&mut self) -> Instant {
        // Per-call verdicts start clean: a handled allocation failure or a
        // refused request earlier must not colour a later error.
        let state = self.store.data_mut();
        state.ticks = 0;
        state.cpu_exceeded = false;
        state.limiter.memory_exceeded = false;
        state.hooks.refused.clear();
        self.store.set_epoch_deadline(1);
        Instant::now()
    }

    fn settle<T>(&mut self, kind: &str, started: Instant, op: String, result: wasmtime::Result<Result<T, WitError>>) -> Result<T, PluginError> {
        let l = &self.labels;
        let labels = [l.plugin.as_str(), l.database.as_str(), l.replica.as_str(), kind];
        metrics::PLUGIN_CALLS_TOTAL.with_label_values(&labels).inc();
        metrics::PLUGIN_CALL_DURATION.with_label_values(&labels).observe(started.elapsed().as_secs_f64());
        let outcome = self.classify(op, result);
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
            metrics::PLUGIN_ERRORS_TOTAL.with_label_values(&[l.plugin.as_str(), l.database.as_str(), l.replica.as_str(), kind, kind_label]).inc();
        }
        outcome
    }

    fn classify<T>(&mut self, op: String, result: wasmtime::Result<Result<T, WitError>>) -> Result<T, PluginError> {
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let mut storage = StorageError::from(e);
                let refused = &self.store.data().hooks.refused;
                if let (StorageError::AccessDenied(msg), Some(host)) = (&mut storage, refused.last()) {
                    msg.push_str(&format!(" [host refused {host}; allowed: {:?}]", self.sandbox.allow_hosts));
                }
                Err(self.error(op, ErrorKind::Storage(storage)))
            }
            Err(e) => {
                // After a trap the instance's state is undefined.
                self.poisoned = true;
                let kind = classify_trap(self.store.data(), e, &self.sandbox);
                Err(self.error(op, kind))
            }
        }
    }

    /// What the plugin declares.
    pub async fn info(&mut self) -> Result<PluginInfo, PluginError> {
        let started = self.arm();
        let result = self.bindings.sluice_storage_backend().call_info(&mut self.store).await;
        self.settle("info", started, "info".into(), result.map(Ok))
    }

    /// Open the store this instance will serve.
    pub async fn open(&mut self, config: &StoreConfig) -> Result<(), PluginError> {
        let started = self.arm();
        let result = self.bindings.sluice_storage_backend().store().call_open(&mut self.store, config).await;
        self.handle = Some(self.settle("open", started, "open".into(), result)?);
        Ok(())
    }

    pub async fn put(&mut self, key: &str, data: &[u8], options: &PutOptions) -> Result<ObjectMeta, PluginError> {
        call!(self, "put", format!("put {key}"), |b, s, h| b.sluice_storage_backend().store().call_put(s, h, key, data, options))
    }

    pub async fn get(&mut self, key: &str, range: Option<ByteRange>) -> Result<Vec<u8>, PluginError> {
        call!(self, "get", format!("get {key}"), |b, s, h| b.sluice_storage_backend().store().call_get(s, h, key, range))
    }

    pub async fn head(&mut self, key: &str) -> Result<ObjectMeta, PluginError> {
        call!(self, "head", format!("head {key}"), |b, s, h| b.sluice_storage_backend().store().call_head(s, h, key))
    }

    pub async fn list(&mut self, prefix: &str, cursor: Option<&str>, max_keys: u32) -> Result<ListPage, PluginError> {
        call!(self, "list", if prefix.is_empty() { "list".to_string() } else { format!("list {prefix}") }, |b, s, h| b
            .sluice_storage_backend()
            .store()
            .call_list(s, h, prefix, cursor, max_keys))
    }

    pub async fn delete(&mut self, keys: &[String]) -> Result<Vec<DeleteFailure>, PluginError> {
        call!(self, "delete", format!("delete {} keys", keys.len()), |b, s, h| b
            .sluice_storage_backend()
            .store()
            .call_delete(s, h, keys))
    }

    pub async fn create_upload(&mut self, key: &str, options: &PutOptions) -> Result<String, PluginError> {
        call!(self, "create-upload", format!("create-upload {key}"), |b, s, h| b
            .sluice_storage_backend()
            .store()
            .call_create_upload(s, h, key, options))
    }

    pub async fn upload_part(
        &mut self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        data: &[u8],
        sha256: Option<&[u8]>,
    ) -> Result<UploadedPart, PluginError> {
        call!(self, "upload-part", format!("upload-part {key} #{part_number}"), |b, s, h| b
            .sluice_storage_backend()
            .store()
            .call_upload_part(s, h, key, upload_id, part_number, data, sha256))
    }

    pub async fn complete_upload(&mut self, key: &str, upload_id: &str, parts: &[UploadedPart]) -> Result<ObjectMeta, PluginError> {
        call!(self, "complete-upload", format!("complete-upload {key}"), |b, s, h| b
            .sluice_storage_backend()
            .store()
            .call_complete_upload(s, h, key, upload_id, parts))
    }

    pub async fn abort_upload(&mut self, key: &str, upload_id: &str) -> Result<(), PluginError> {
        call!(self, "abort-upload", format!("abort-upload {key}"), |b, s, h| b
            .sluice_storage_backend()
            .store()
            .call_abort_upload(s, h, key, upload_id))
    }

    /// Whether an earlier call trapped (the instance must be replaced).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}
