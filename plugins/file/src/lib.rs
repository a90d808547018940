//! The bundled file backend: a replica in a local directory.
//!
//! The host grants this plugin exactly one directory (the replica URL's
//! path, mounted at the same path), so even a bug here cannot reach other
//! files. Writes are atomic: temp file, fsync, rename, directory fsync.
//! Names starting with `.sluice-` are this plugin's own (temp files,
//! metadata sidecars, multipart uploads) and never listed.
#![cfg(target_arch = "wasm32")]

mod fsutil;
mod multipart;

use fsutil::Root;
use sluice_sdk::*;

/// Largest single put. Bigger objects go multipart, which keeps the
/// plugin's memory (bounded by the sandbox) well under its limit.
const MAX_PUT_SIZE: u64 = 64 << 20;
/// Largest part; the same reasoning as `MAX_PUT_SIZE`.
const MAX_PART_SIZE: u64 = 64 << 20;
/// Parts per upload: 10,000 parts of 64 MiB is 640 GiB, beyond any SQLite
/// database sluice is meant for.
const MAX_PARTS: u32 = 10_000;
/// Keys per delete and per list page: bounded so one call's memory is.
const MAX_BATCH: u32 = 1000;

struct FileBackend {
    root: Root,
}

impl Backend for FileBackend {
    fn info() -> PluginInfo {
        PluginInfo {
            needs_directory: true,
            capabilities: Capabilities {
                conditional_writes: true,
                ranged_reads: true,
                multipart_upload: true,
                max_object_size: None,
                max_put_size: MAX_PUT_SIZE,
                min_part_size: 1,
                max_part_size: MAX_PART_SIZE,
                max_parts: MAX_PARTS,
                max_delete_batch: MAX_BATCH,
                max_list_page: MAX_BATCH,
            },
            ..PluginInfo::basic(
                "file",
                env!("CARGO_PKG_VERSION"),
                "Local directory (file:///path or a plain path); atomic writes with fsync",
                &["file"],
            )
        }
    }

    fn open(config: Config) -> Result<Self, Error> {
        Ok(FileBackend { root: Root::from_url(&config.url)? })
    }

    fn put(&self, key: &str, data: Vec<u8>, options: PutOptions) -> Result<ObjectMeta, Error> {
        let path = self.root.path(key)?;
        let (tmp, written) = self.root.write_temp(&path, |f| fsutil::write_new(f, &data))?;
        self.root.commit(&tmp, &path, &options)?;
        // Neither the file (linked or renamed into place) nor the metadata
        // just written need be read back.
        let mut meta = fsutil::object_meta(key, &written);
        meta.metadata = options.metadata;
        Ok(meta)
    }

    fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Vec<u8>, Error> {
        self.root.read(key, range)
    }

    fn head(&self, key: &str) -> Result<ObjectMeta, Error> {
        let path = self.root.path(key)?;
        let mut meta = self.root.stat(key, &path)?;
        meta.metadata = fsutil::read_sidecar(&path)?;
        Ok(meta)
    }

    fn list(&self, prefix: &str, cursor: Option<String>, max_keys: u32) -> Result<ListPage, Error> {
        let mut keys = Vec::new();
        self.root.walk(prefix, &mut keys)?;
        keys.sort_unstable();
        let limit = max_keys.min(MAX_BATCH);
        let mut failed = None;
        let page = ListPage::from_sorted_keys(keys.into_iter(), cursor, limit, |k| {
            self.root.path(k).and_then(|p| self.root.stat(k, &p)).unwrap_or_else(|e| {
                failed = Some(e);
                ObjectMeta::new(k, 0, String::new())
            })
        });
        match failed {
            // An object deleted between walk and stat: report it as missing
            // from the page rather than failing the whole listing.
            Some(Error::NotFound(_)) | None => Ok(ListPage {
                objects: page.objects.into_iter().filter(|o| !o.etag.is_empty()).collect(),
                next_cursor: page.next_cursor,
            }),
            Some(e) => Err(e),
        }
    }

    fn delete(&self, keys: Vec<String>) -> Result<Vec<DeleteFailure>, Error> {
        check_delete_batch(keys.len(), MAX_BATCH)?;
        let mut failures = Vec::new();
        for key in keys {
            let path = match self.root.path(&key) {
                Ok(p) => p,
                Err(error) => {
                    failures.push(DeleteFailure { key, error });
                    continue;
                }
            };
            // Sidecar first: a crash in between leaves an object without
            // metadata, never metadata a later object of the name inherits.
            let removed =
                fsutil::remove_if_exists(&fsutil::sidecar_path(&path)).and_then(|()| fsutil::remove_if_exists(&path));
            match removed {
                Ok(()) => self.root.prune_empty_dirs(&path),
                Err(e) => failures.push(DeleteFailure { key, error: e }),
            }
        }
        Ok(failures)
    }

    fn create_upload(&self, key: &str, options: PutOptions) -> Result<String, Error> {
        multipart::create(&self.root, key, &options)
    }

    fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        data: Vec<u8>,
        _content_sha256: Option<Vec<u8>>,
    ) -> Result<UploadedPart, Error> {
        multipart::upload_part(&self.root, key, upload_id, part_number, &data)
    }

    fn complete_upload(&self, key: &str, upload_id: &str, parts: Vec<UploadedPart>) -> Result<ObjectMeta, Error> {
        multipart::complete(&self.root, key, upload_id, &parts)?;
        self.head(key)
    }

    fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), Error> {
        multipart::abort(&self.root, key, upload_id)
    }
}

export_backend!(FileBackend);
