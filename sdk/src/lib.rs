//! # sluice-sdk: write a sluice storage backend
//!
//! A sluice plugin is a WebAssembly component that moves opaque blobs to
//! and from one kind of store. The host does everything else (capturing
//! SQLite changes, building segments, retries, retention). A plugin author
//! implements [`Backend`] and calls [`export_backend!`]; the WIT bindings
//! stay inside this crate.
//!
//! Build with `cargo build --target wasm32-wasip2 --release` as a `cdylib`;
//! the `.wasm` file is the component, loaded with
//! `sluice replicate --plugin my.wasm ...`.
//!
//! ## A complete in-memory backend
//!
//! ```ignore
//! use std::cell::RefCell;
//! use std::collections::BTreeMap;
//! use sluice_sdk::*;
//!
//! struct Memory { objects: RefCell<BTreeMap<String, Vec<u8>>> }
//!
//! impl Backend for Memory {
//!     fn info() -> PluginInfo {
//!         PluginInfo::basic("memory", env!("CARGO_PKG_VERSION"), "objects in plugin memory", &["mem"])
//!     }
//!     fn open(_config: Config) -> Result<Self, Error> {
//!         Ok(Memory { objects: RefCell::default() })
//!     }
//!     fn put(&self, key: &str, data: Vec<u8>, options: PutOptions) -> Result<ObjectMeta, Error> {
//!         if options.precondition != Precondition::None {
//!             return Err(Error::unsupported("conditional writes"));
//!         }
//!         let meta = ObjectMeta::new(key, data.len() as u64, format!("{}", data.len()));
//!         self.objects.borrow_mut().insert(key.to_string(), data);
//!         Ok(meta)
//!     }
//!     fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Vec<u8>, Error> {
//!         let objects = self.objects.borrow();
//!         let data = objects.get(key).ok_or_else(|| Error::not_found(key))?;
//!         Ok(slice_range(data, range).to_vec())
//!     }
//!     fn head(&self, key: &str) -> Result<ObjectMeta, Error> {
//!         let objects = self.objects.borrow();
//!         let data = objects.get(key).ok_or_else(|| Error::not_found(key))?;
//!         Ok(ObjectMeta::new(key, data.len() as u64, format!("{}", data.len())))
//!     }
//!     fn list(&self, prefix: &str, cursor: Option<String>, max_keys: u32) -> Result<ListPage, Error> {
//!         let objects = self.objects.borrow();
//!         let keys = objects.keys().filter(|k| k.starts_with(prefix)).cloned();
//!         Ok(ListPage::from_sorted_keys(keys, cursor, max_keys, |k| {
//!             let len = objects[k].len() as u64;
//!             ObjectMeta::new(k, len, format!("{len}"))
//!         }))
//!     }
//!     fn delete(&self, keys: Vec<String>) -> Result<Vec<DeleteFailure>, Error> {
//!         let mut objects = self.objects.borrow_mut();
//!         keys.iter().for_each(|k| { objects.remove(k); });
//!         Ok(Vec::new())
//!     }
//! }
//!
//! export_backend!(Memory);
//! ```
//!
//! Talking to a network store? Use [`http::Request`]: it runs over
//! `wasi:http`, which the host carries and confines to the replica's
//! allowlist. Log with [`info!`], [`warn!`] and [`debug!`].

#[doc(hidden)]
pub mod bindings;
mod config;
mod error;
pub mod http;
pub mod log;
mod types;
pub mod upload;
pub mod xml;

pub use bindings::sluice::storage::storage_types::{
    ByteRange, Capabilities, DeleteFailure, Error, ListPage, ObjectMeta, PluginInfo, Precondition, PutOptions, Setting,
    Throttle, UploadedPart,
};
pub use config::{Config, check_delete_batch, key_prefix, percent_decode, validate_key};
pub use types::slice_range;

/// A storage backend. Implement this and call [`export_backend!`].
///
/// One value is created per `open` and lives for a short batch of calls
/// (the host drops the whole instance between batches, so an idle
/// database costs no memory). Keys passed in are already checked with
/// [`validate_key`].
pub trait Backend: Sized + 'static {
    /// What the plugin is and can do.
    fn info() -> PluginInfo;
    /// Parse the configuration and open the store.
    fn open(config: Config) -> Result<Self, Error>;
    /// Write a whole object atomically, honouring the precondition.
    fn put(&self, key: &str, data: Vec<u8>, options: PutOptions) -> Result<ObjectMeta, Error>;
    /// Read an object or a range of it (see [`slice_range`]).
    fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Vec<u8>, Error>;
    /// Describe an object.
    fn head(&self, key: &str) -> Result<ObjectMeta, Error>;
    /// One page of keys under `prefix`, ascending, after `cursor`.
    fn list(&self, prefix: &str, cursor: Option<String>, max_keys: u32) -> Result<ListPage, Error>;
    /// Delete keys; missing keys are not failures.
    fn delete(&self, keys: Vec<String>) -> Result<Vec<DeleteFailure>, Error>;

    /// What this opened store can do. Default: the plugin's
    /// capabilities; return less when the configuration turns something
    /// off (the host then never asks for it).
    fn capabilities(&self) -> Capabilities {
        Self::info().capabilities
    }
    /// Start a multipart upload. Default: unsupported.
    fn create_upload(&self, key: &str, options: PutOptions) -> Result<String, Error> {
        let _ = (key, options);
        Err(Error::unsupported("multipart upload"))
    }
    /// Upload one part. Default: unsupported.
    fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        data: Vec<u8>,
        content_sha256: Option<Vec<u8>>,
    ) -> Result<UploadedPart, Error> {
        let _ = (key, upload_id, part_number, data, content_sha256);
        Err(Error::unsupported("multipart upload"))
    }
    /// Assemble the parts into the object. Default: unsupported.
    fn complete_upload(&self, key: &str, upload_id: &str, parts: Vec<UploadedPart>) -> Result<ObjectMeta, Error> {
        let _ = (key, upload_id, parts);
        Err(Error::unsupported("multipart upload"))
    }
    /// Abandon an upload. Default: unsupported.
    fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), Error> {
        let _ = (key, upload_id);
        Err(Error::unsupported("multipart upload"))
    }
}

/// Random bytes from the host (for upload ids, temp names, ...).
pub fn random_u64() -> u64 {
    wasip2::random::random::get_random_u64()
}

/// Export a [`Backend`] as the component's implementation of the contract.
/// Call it once, at the crate root of the plugin.
#[macro_export]
macro_rules! export_backend {
    ($backend:ty) => {
        #[doc(hidden)]
        struct __SluiceExportedPlugin;
        impl $crate::__private::Guest for __SluiceExportedPlugin {
            type Store = $crate::__private::StoreAdapter<$backend>;
            fn info() -> $crate::PluginInfo {
                <$backend as $crate::Backend>::info()
            }
        }
        $crate::__private::bindings::__export_plugin!(__SluiceExportedPlugin with_types_in $crate::__private::bindings);
    };
}

#[doc(hidden)]
pub mod __private {
    pub use crate::bindings;
    pub use crate::bindings::exports::sluice::storage::backend::Guest;
    use crate::bindings::exports::sluice::storage::backend::{GuestStore, Store};
    use crate::bindings::sluice::storage::storage_types::StoreConfig;
    use crate::{
        Backend, ByteRange, Capabilities, Config, DeleteFailure, Error, ListPage, ObjectMeta, PutOptions, UploadedPart,
        validate_key,
    };

    /// Bridges the generated resource trait to [`Backend`], checking keys
    /// once here so no backend can forget to.
    pub struct StoreAdapter<B: Backend>(B);

    impl<B: Backend> GuestStore for StoreAdapter<B> {
        fn open(config: StoreConfig) -> Result<Store, Error> {
            let declared = B::info().settings.into_iter().map(|s| s.name).collect();
            let backend = B::open(Config::declared(config.url, config.settings, declared)?)?;
            Ok(Store::new(StoreAdapter(backend)))
        }
        fn capabilities(&self) -> Capabilities {
            self.0.capabilities()
        }
        fn put(&self, key: String, data: Vec<u8>, options: PutOptions) -> Result<ObjectMeta, Error> {
            validate_key(&key)?;
            let max = B::info().capabilities.max_put_size;
            if data.len() as u64 > max {
                return Err(Error::invalid_config(format!(
                    "put of {} bytes exceeds this plugin's max-put-size {max}; use multipart upload",
                    data.len()
                )));
            }
            self.0.put(&key, data, options)
        }
        fn get(&self, key: String, range: Option<ByteRange>) -> Result<Vec<u8>, Error> {
            validate_key(&key)?;
            self.0.get(&key, range)
        }
        fn head(&self, key: String) -> Result<ObjectMeta, Error> {
            validate_key(&key)?;
            self.0.head(&key)
        }
        fn list(&self, prefix: String, cursor: Option<String>, max_keys: u32) -> Result<ListPage, Error> {
            self.0.list(&prefix, cursor, max_keys)
        }
        fn delete(&self, keys: Vec<String>) -> Result<Vec<DeleteFailure>, Error> {
            keys.iter().try_for_each(|k| validate_key(k))?;
            self.0.delete(keys)
        }
        fn create_upload(&self, key: String, options: PutOptions) -> Result<String, Error> {
            validate_key(&key)?;
            self.0.create_upload(&key, options)
        }
        fn upload_part(
            &self,
            key: String,
            upload_id: String,
            part_number: u32,
            data: Vec<u8>,
            content_sha256: Option<Vec<u8>>,
        ) -> Result<UploadedPart, Error> {
            validate_key(&key)?;
            // The limits the plugin declared are enforced here, once, for
            // every plugin.
            let caps = B::info().capabilities;
            if part_number == 0 || (caps.max_parts > 0 && part_number > caps.max_parts) {
                return Err(Error::invalid_config(format!(
                    "part number {part_number} is outside 1..={}",
                    caps.max_parts
                )));
            }
            if data.len() as u64 > caps.max_part_size {
                return Err(Error::invalid_config(format!(
                    "part of {} bytes exceeds this plugin's max-part-size {}",
                    data.len(),
                    caps.max_part_size
                )));
            }
            self.0.upload_part(&key, &upload_id, part_number, data, content_sha256)
        }
        fn complete_upload(
            &self,
            key: String,
            upload_id: String,
            parts: Vec<UploadedPart>,
        ) -> Result<ObjectMeta, Error> {
            validate_key(&key)?;
            self.0.complete_upload(&key, &upload_id, parts)
        }
        fn abort_upload(&self, key: String, upload_id: String) -> Result<(), Error> {
            validate_key(&key)?;
            self.0.abort_upload(&key, &upload_id)
        }
    }
}
