//! One wasmtime engine for the process, the plugins loaded into it, and
//! fresh sandboxed instances on demand.

use super::bindings::{PluginInfo, PluginPre};
use super::error::{ErrorKind, Labels, PluginError};
use super::sandbox::{EPOCH_TICK, HostState, Sandbox};
use super::{bundled, cache};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, Store, UpdateDeadline};

/// Plugin instances alive at once, process-wide. Memory grows with this,
/// not with the number of databases; beyond it, callers wait their turn.
pub const MAX_LIVE_INSTANCES: usize = 256;
/// Idle instances kept for reuse (see `PluginStore::recycle`),
/// process-wide. They hold no live slot, and the epoch clock does not tick
/// for them; each keeps its memory (one to two MiB for the bundled
/// plugins), so this caps what idle reuse can cost.
pub const MAX_WARM_INSTANCES: usize = 64;

/// The process's plugin machinery.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    client: super::http::LazyClient,
    permits: Arc<Semaphore>,
    warm: Arc<Semaphore>,
    cache: Option<cache::Cache>,
    /// The epoch clock's thread, woken when an instance starts.
    clock: std::sync::OnceLock<std::thread::Thread>,
}

impl Runtime {
    /// Build the engine and start its epoch clock. `cache_dir` holds
    /// compiled components (`None` disables the cache).
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<Arc<Runtime>> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        super::bindings::add_to_linker(&mut linker)?;
        let runtime = Arc::new(Runtime {
            engine,
            linker,
            client: super::http::LazyClient::default(),
            permits: Arc::new(Semaphore::new(MAX_LIVE_INSTANCES)),
            warm: Arc::new(Semaphore::new(MAX_WARM_INSTANCES)),
            cache: cache_dir.map(cache::Cache::new),
            clock: std::sync::OnceLock::new(),
        });
        start_epoch_clock(Arc::downgrade(&runtime));
        Ok(runtime)
    }

    /// A runtime with the default compile cache.
    pub fn with_default_cache() -> anyhow::Result<Arc<Runtime>> {
        Runtime::new(cache::default_cache_dir())
    }

    /// Load a plugin from a `.wasm` file.
    pub async fn load_file(self: &Arc<Self>, path: &Path) -> Result<Arc<LoadedPlugin>, PluginError> {
        let bytes = std::fs::read(path)
            .map_err(|e| load_error(&path.display().to_string(), format!("cannot read {}: {e}", path.display())))?;
        self.load(&bytes, &path.display().to_string()).await
    }

    /// Load a bundled plugin by name (`file`).
    pub async fn load_bundled(self: &Arc<Self>, name: &str) -> Result<Arc<LoadedPlugin>, PluginError> {
        let bytes = bundled::bytes(name).ok_or_else(|| {
            load_error(name, format!("no bundled plugin named `{name}` (bundled: {})", bundled::NAMES.join(", ")))
        })?;
        self.load_known(bytes, bundled::sha256(name), &format!("bundled:{name}")).await
    }

    /// Compile (or fetch from cache), link, and ask the plugin what it is.
    pub async fn load(self: &Arc<Self>, wasm: &[u8], source: &str) -> Result<Arc<LoadedPlugin>, PluginError> {
        self.load_known(wasm, None, source).await
    }

    /// `load`, given the bytes' SHA-256 (hex) when it is already known.
    async fn load_known(
        self: &Arc<Self>,
        wasm: &[u8],
        sha256: Option<&str>,
        source: &str,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let component = cache::load(&self.engine, wasm, sha256, self.cache.as_ref())
            .map_err(|e| load_error(source, format!("not a valid WebAssembly component: {e:#}")))?;
        let pre = self.linker.instantiate_pre(&component).and_then(PluginPre::new).map_err(|e| {
            let versions = super::bindings::CONTRACTS.join(", ");
            load_error(source, format!("does not fit the sluice:storage contract (versions {versions}): {e:#}"))
        })?;
        let labels = Arc::new(Labels { plugin: source.to_string(), database: "-".into(), replica: "-".into() });
        let permit = runtime_permit(self, &labels).await?;
        let mut instance = instantiate(self, &pre, &Sandbox::default(), labels, permit).await?;
        let info = instance.info().await?;
        drop(instance);
        Ok(Arc::new(LoadedPlugin { runtime: self.clone(), pre, source: source.to_string(), info }))
    }

    pub(super) fn client(&self) -> &super::http::LazyClient {
        &self.client
    }
}

fn load_error(source: &str, msg: String) -> PluginError {
    PluginError {
        labels: Arc::new(Labels { plugin: source.to_string(), database: "-".into(), replica: "-".into() }),
        op: "load".into(),
        kind: ErrorKind::Load(msg),
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // The parked clock finds the runtime gone and exits.
        if let Some(clock) = self.clock.get() {
            clock.unpark();
        }
    }
}

/// Advance the engine's epoch every tick while any instance is alive (an
/// idle process, most of the time, then costs no wake-ups), for as long
/// as the runtime lives.
fn start_epoch_clock(runtime: Weak<Runtime>) {
    let weak = runtime.clone();
    let spawned = std::thread::Builder::new().name("sluice-epoch".into()).spawn(move || {
        loop {
            let idle = match weak.upgrade() {
                Some(rt) => {
                    let idle = rt.permits.available_permits() == MAX_LIVE_INSTANCES;
                    if !idle {
                        rt.engine.increment_epoch();
                    }
                    idle
                }
                None => return,
            };
            if idle {
                // Woken when an instance takes a live slot (an unpark
                // between the check above and here makes this return at
                // once) and when the runtime is dropped. No timeout: on
                // this kind of machine every wake-up of an idle process
                // costs tens of microseconds of CPU.
                std::thread::park();
            } else {
                std::thread::sleep(EPOCH_TICK);
            }
        }
    });
    match (spawned, runtime.upgrade()) {
        (Ok(handle), Some(rt)) => {
            let _ = rt.clock.set(handle.thread().clone());
            // An instance that started before the clock was known here
            // woke nobody; the clock may have parked seeing none.
            handle.thread().unpark();
        }
        (Err(e), _) => tracing::error!("could not start the plugin CPU clock: {e}"),
        _ => {}
    }
}

/// A compiled, linked plugin: cheap to instantiate (tens of µs).
pub struct LoadedPlugin {
    runtime: Arc<Runtime>,
    pre: PluginPre,
    source: String,
    info: PluginInfo,
}

impl LoadedPlugin {
    /// What the plugin declared.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The settings it declared; `None` for a plugin of contract 0.1.0,
    /// which could not declare any (and is given every setting).
    pub fn declared_settings(&self) -> Option<&[super::bindings::Setting]> {
        match self.pre {
            PluginPre::V0_1(_) => None,
            PluginPre::V0_2(_) => Some(&self.info.settings),
        }
    }

    /// The contract version it was built against (`bindings::CONTRACTS`).
    pub fn contract(&self) -> &'static str {
        self.pre.contract()
    }

    /// Where it came from (`bundled:file` or a path).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// A fresh instance in its own store, confined by `sandbox`. Waits for
    /// a slot if `MAX_LIVE_INSTANCES` are alive.
    pub async fn instantiate(&self, sandbox: &Sandbox, labels: Arc<Labels>) -> Result<Instance, PluginError> {
        let permit = runtime_permit(&self.runtime, &labels).await?;
        instantiate(&self.runtime, &self.pre, sandbox, labels, permit).await
    }

    /// An instance only if a live slot is free now (`None` otherwise):
    /// for extra, optional parallelism that must never wait for a slot
    /// while holding one (a wait that could deadlock when every slot is
    /// held by someone waiting for a second).
    pub async fn instantiate_if_free(
        &self,
        sandbox: &Sandbox,
        labels: Arc<Labels>,
    ) -> Option<Result<Instance, PluginError>> {
        let permit = self.try_live_slot()?;
        Some(instantiate(&self.runtime, &self.pre, sandbox, labels, permit).await)
    }

    /// A live slot for a warm instance going back to work, if one is free
    /// now (a warm instance never waits for one: a fresh instance could
    /// not start any sooner).
    pub(super) fn try_live_slot(&self) -> Option<Permit> {
        let permit = self.runtime.permits.clone().try_acquire_owned().ok()?;
        if let Some(clock) = self.runtime.clock.get() {
            clock.unpark();
        }
        Some(permit)
    }

    /// A slot to keep an idle instance warm in, if one is free.
    pub(super) fn try_warm_slot(&self) -> Option<Permit> {
        self.runtime.warm.clone().try_acquire_owned().ok()
    }
}

/// A live slot, waiting for one if none is free.
async fn runtime_permit(runtime: &Runtime, labels: &Arc<Labels>) -> Result<Permit, PluginError> {
    let permit = runtime.permits.clone().acquire_owned().await.map_err(|_| PluginError {
        labels: labels.clone(),
        op: "instantiate".into(),
        kind: ErrorKind::Load("runtime is shutting down".into()),
    })?;
    if let Some(clock) = runtime.clock.get() {
        clock.unpark();
    }
    Ok(permit)
}

/// A fresh instance of `pre` in its own confined store, in `permit`'s slot.
async fn instantiate(
    runtime: &Runtime,
    pre: &PluginPre,
    sandbox: &Sandbox,
    labels: Arc<Labels>,
    permit: Permit,
) -> Result<Instance, PluginError> {
    let fail = |kind| PluginError { labels: labels.clone(), op: "instantiate".into(), kind };
    let state = HostState::new(sandbox, labels.clone(), runtime.client().clone())
        .map_err(|e| fail(ErrorKind::Load(format!("sandbox setup failed: {e:#}"))))?;
    let mut store = Store::new(&runtime.engine, state);
    store.limiter(|s| &mut s.limiter);
    store.epoch_deadline_callback(|mut ctx| {
        let state = ctx.data_mut();
        state.ticks += 1;
        if state.ticks > state.tick_budget {
            state.cpu_exceeded = true;
            return Ok(UpdateDeadline::Interrupt);
        }
        // Yield so one busy plugin cannot monopolise a runtime thread.
        Ok(UpdateDeadline::Yield(1))
    });
    store.set_epoch_deadline(1);
    let bindings = pre.instantiate_async(&mut store).await.map_err(|e| {
        let kind = super::instance::classify_trap(store.data(), e, sandbox);
        fail(kind)
    })?;
    Ok(Instance::new(store, bindings, sandbox.clone(), labels, permit))
}

pub use super::instance::Instance;

pub(super) type Permit = OwnedSemaphorePermit;
