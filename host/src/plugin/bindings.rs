//! Host-side bindings generated from `wit/`, one module per contract
//! version the host runs (decision 34), and `Plugin`, which calls either
//! with the current version's types.

/// The current contract, `wit/storage.wit`. The rest of the host speaks
/// its types.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sluice:storage/plugin@0.2.0",
        // Exports are async so a plugin blocked on `wasi:http` yields the
        // thread instead of pinning it.
        exports: { default: async },
    });
}

/// The first released contract, kept verbatim in `wit/released/0.1.0`:
/// plugins built against it keep working.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/released/0.1.0",
        world: "sluice:storage/plugin@0.1.0",
        exports: { default: async },
    });
}

pub use v0_2::sluice::storage::storage_types::{
    ByteRange, Capabilities, DeleteFailure, Error as WitError, ListPage, ObjectMeta, PluginInfo, Precondition,
    PutOptions, Setting, StoreConfig, UploadedPart,
};

use super::sandbox::HostState;
use wasmtime::Store;
use wasmtime::component::{InstancePre, ResourceAny};

/// The contract versions the host runs, newest first.
pub const CONTRACTS: &[&str] = &["0.2.0", "0.1.0"];

/// A linked plugin of either contract version.
pub enum PluginPre {
    V0_2(v0_2::PluginPre<HostState>),
    V0_1(v0_1::PluginPre<HostState>),
}

/// An instantiated plugin of either contract version.
pub enum Plugin {
    V0_2(v0_2::Plugin),
    V0_1(v0_1::Plugin),
}

impl PluginPre {
    /// Match the component's exports against each contract, newest first.
    /// Only the newest version's mismatch is reported: a plugin that fits
    /// none is most likely built against it.
    pub fn new(pre: InstancePre<HostState>) -> wasmtime::Result<PluginPre> {
        match v0_2::PluginPre::new(pre.clone()) {
            Ok(p) => Ok(PluginPre::V0_2(p)),
            Err(newest) => v0_1::PluginPre::new(pre).map(PluginPre::V0_1).map_err(|_| newest),
        }
    }

    /// The contract version the plugin was built against.
    pub fn contract(&self) -> &'static str {
        match self {
            PluginPre::V0_2(_) => CONTRACTS[0],
            PluginPre::V0_1(_) => CONTRACTS[1],
        }
    }

    pub async fn instantiate_async(&self, store: &mut Store<HostState>) -> wasmtime::Result<Plugin> {
        Ok(match self {
            PluginPre::V0_2(p) => Plugin::V0_2(p.instantiate_async(store).await?),
            PluginPre::V0_1(p) => Plugin::V0_1(p.instantiate_async(store).await?),
        })
    }
}

/// Every version's imports (`log`), for the one linker of the runtime.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    v0_2::Plugin::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    v0_1::Plugin::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

type Outcome<T> = wasmtime::Result<Result<T, WitError>>;

/// One call on either version: the arguments go in as the current
/// version's types, and the results come back as them.
macro_rules! dispatch {
    ($self:ident, |$b:ident| $new:expr, |$o:ident| $old:expr) => {
        match $self {
            Plugin::V0_2(p) => {
                let $b = p.sluice_storage_backend();
                $new.await
            }
            Plugin::V0_1(p) => {
                let $o = p.sluice_storage_backend();
                $old.await.map(super::compat::Up::up)
            }
        }
    };
}

impl Plugin {
    pub async fn call_info(&self, s: &mut Store<HostState>) -> wasmtime::Result<PluginInfo> {
        dispatch!(self, |b| b.call_info(s), |o| o.call_info(s))
    }

    pub async fn call_open(&self, s: &mut Store<HostState>, config: &StoreConfig) -> Outcome<ResourceAny> {
        use super::compat::down;
        dispatch!(self, |b| b.store().call_open(s, config), |o| o.store().call_open(s, &down::config(config)))
    }

    /// The store's own capabilities; `None` from a 0.1.0 plugin, whose
    /// stores all have the plugin's.
    pub async fn call_capabilities(
        &self,
        s: &mut Store<HostState>,
        h: ResourceAny,
    ) -> wasmtime::Result<Option<Capabilities>> {
        match self {
            Plugin::V0_2(p) => p.sluice_storage_backend().store().call_capabilities(s, h).await.map(Some),
            Plugin::V0_1(_) => Ok(None),
        }
    }

    pub async fn call_put(
        &self,
        s: &mut Store<HostState>,
        h: ResourceAny,
        key: &str,
        data: &[u8],
        options: &PutOptions,
    ) -> Outcome<ObjectMeta> {
        use super::compat::down;
        dispatch!(self, |b| b.store().call_put(s, h, key, data, options), |o| o.store().call_put(
            s,
            h,
            key,
            data,
            &down::options(options)
        ))
    }

    pub async fn call_get(
        &self,
        s: &mut Store<HostState>,
        h: ResourceAny,
        key: &str,
        range: Option<ByteRange>,
    ) -> Outcome<Vec<u8>> {
        use super::compat::down;
        dispatch!(self, |b| b.store().call_get(s, h, key, range), |o| o.store().call_get(
            s,
            h,
            key,
            range.map(down::range)
        ))
    }

    pub async fn call_head(&self, s: &mut Store<HostState>, h: ResourceAny, key: &str) -> Outcome<ObjectMeta> {
        dispatch!(self, |b| b.store().call_head(s, h, key), |o| o.store().call_head(s, h, key))
    }

    pub async fn call_list(
        &self,
        s: &mut Store<HostState>,
        h: ResourceAny,
        prefix: &str,
        cursor: Option<&str>,
        max_keys: u32,
    ) -> Outcome<ListPage> {
        dispatch!(self, |b| b.store().call_list(s, h, prefix, cursor, max_keys), |o| o
            .store()
            .call_list(s, h, prefix, cursor, max_keys))
    }

    pub async fn call_delete(
        &self,
        s: &mut Store<HostState>,
        h: ResourceAny,
        keys: &[String],
    ) -> Outcome<Vec<DeleteFailure>> {
        dispatch!(self, |b| b.store().call_delete(s, h, keys), |o| o.store().call_delete(s, h, keys))
    }

    pub async fn call_create_upload(
        &self,
        s: &mut Store<HostState>,
        h: ResourceAny,
        key: &str,
        options: &PutOptions,
    ) -> Outcome<String> {
        use super::compat::down;
        dispatch!(self, |b| b.store().call_create_upload(s, h, key, options), |o| o.store().call_create_upload(
            s,
            h,
            key,
            &down::options(options)
        ))
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn call_upload_part(
        &self,
        s: &mut Store<HostState>,
        h: ResourceAny,
        key: &str,
        upload_id: &str,
        part_number: u32,
        data: &[u8],
        sha256: Option<&[u8]>,
    ) -> Outcome<UploadedPart> {
        dispatch!(self, |b| b.store().call_upload_part(s, h, key, upload_id, part_number, data, sha256), |o| o
            .store()
            .call_upload_part(s, h, key, upload_id, part_number, data, sha256))
    }

    pub async fn call_complete_upload(
        &self,
        s: &mut Store<HostState>,
        h: ResourceAny,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
    ) -> Outcome<ObjectMeta> {
        use super::compat::down;
        dispatch!(self, |b| b.store().call_complete_upload(s, h, key, upload_id, parts), |o| o
            .store()
            .call_complete_upload(s, h, key, upload_id, &down::parts(parts)))
    }

    pub async fn call_abort_upload(
        &self,
        s: &mut Store<HostState>,
        h: ResourceAny,
        key: &str,
        upload_id: &str,
    ) -> Outcome<()> {
        dispatch!(self, |b| b.store().call_abort_upload(s, h, key, upload_id), |o| o
            .store()
            .call_abort_upload(s, h, key, upload_id))
    }
}
