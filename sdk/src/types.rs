//! Conveniences on the contract's records, so a small backend stays small.

use crate::{ByteRange, Capabilities, ListPage, ObjectMeta, PluginInfo, Precondition, PutOptions, Setting};

impl Capabilities {
    /// A store with ranged reads, no conditional writes or multipart, and
    /// modest limits: without multipart an object must fit one put, so the
    /// largest object is the largest put (64 MiB), and `plugin info` says
    /// so; the host stores larger segments as several objects. Adjust
    /// fields as the store allows.
    pub fn minimal() -> Self {
        Capabilities {
            conditional_writes: false,
            ranged_reads: true,
            multipart_upload: false,
            max_object_size: Some(64 << 20),
            max_put_size: 64 << 20,
            min_part_size: 0,
            max_part_size: 64 << 20,
            max_parts: 0,
            max_delete_batch: 1000,
            max_list_page: 1000,
        }
    }
}

impl Capabilities {
    /// A store whose objects go up in one put of at most `max_put_size`
    /// bytes (no multipart), which is then also its largest object; ranged
    /// reads, no conditional writes, batches of 1000.
    pub fn single_put(max_put_size: u64) -> Self {
        Capabilities {
            max_object_size: Some(max_put_size),
            max_put_size,
            min_part_size: 1,
            max_part_size: max_put_size,
            max_parts: 1,
            ..Capabilities::minimal()
        }
    }
}

impl PluginInfo {
    /// Info with [`Capabilities::minimal`], no directory grant and no
    /// settings (add them with [`PluginInfo::with_settings`]).
    pub fn basic(name: &str, version: &str, description: &str, schemes: &[&str]) -> Self {
        PluginInfo {
            name: name.into(),
            version: version.into(),
            description: description.into(),
            schemes: schemes.iter().map(|s| s.to_string()).collect(),
            capabilities: Capabilities::minimal(),
            needs_directory: false,
            needs_sockets: false,
            settings: Vec::new(),
        }
    }

    /// This info declaring `settings`: the only ones the host passes to
    /// [`crate::Backend::open`], and the only ones [`crate::Config::get`]
    /// may ask for.
    pub fn with_settings(mut self, settings: impl IntoIterator<Item = Setting>) -> Self {
        self.settings.extend(settings);
        self
    }
}

impl Setting {
    /// An optional, non-secret setting.
    pub fn new(name: &str, description: &str) -> Self {
        Setting { name: name.into(), description: description.into(), secret: false, required: false }
    }

    /// The value is a credential: never shown, warned about in a URL.
    pub fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    /// A replica cannot open without it.
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }
}

impl ObjectMeta {
    /// Metadata with no modification time and no user metadata.
    pub fn new(key: &str, size: u64, etag: String) -> Self {
        ObjectMeta { key: key.into(), size, etag, modified_ms: None, metadata: Vec::new() }
    }
}

impl PutOptions {
    /// An unconditional put without metadata.
    pub fn plain() -> Self {
        PutOptions { precondition: Precondition::None, metadata: Vec::new(), content_sha256: None }
    }
}

impl PartialEq for Precondition {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Precondition::None, Precondition::None) => true,
            (Precondition::IfAbsent, Precondition::IfAbsent) => true,
            (Precondition::IfMatch(a), Precondition::IfMatch(b)) => a == b,
            _ => false,
        }
    }
}

impl ListPage {
    /// Build a page from keys already in ascending order: skips keys up to
    /// `cursor`, takes `max_keys` (at least 1), and sets the next cursor.
    pub fn from_sorted_keys(
        keys: impl Iterator<Item = String>,
        cursor: Option<String>,
        max_keys: u32,
        mut meta: impl FnMut(&str) -> ObjectMeta,
    ) -> Self {
        let limit = max_keys.max(1) as usize;
        let mut objects = Vec::new();
        let mut more = false;
        for key in keys.filter(|k| cursor.as_ref().is_none_or(|c| k.as_str() > c.as_str())) {
            if objects.len() == limit {
                more = true;
                break;
            }
            objects.push(meta(&key));
        }
        let next_cursor = if more { objects.last().map(|o: &ObjectMeta| o.key.clone()) } else { None };
        ListPage { objects, next_cursor }
    }
}

/// The bytes of `data` that `range` selects, cut at the end as the
/// contract says (a range past the end selects nothing).
pub fn slice_range(data: &[u8], range: Option<ByteRange>) -> &[u8] {
    match range {
        None => data,
        Some(r) => {
            let len = data.len() as u64;
            let start = r.offset.min(len);
            let end = r.offset.saturating_add(r.length).min(len);
            &data[start as usize..end as usize]
        }
    }
}
