//! Plugins built against contract 0.1.0, spoken to in the current
//! version's types: `Up` lifts what they return, `down` lowers what they
//! are given. The records are the same field for field but for
//! `plugin-info`, which gained `settings` (a 0.1.0 plugin declares none,
//! and gets every setting, as it always did).

use super::bindings::v0_1::sluice::storage::types as old;
use super::bindings::v0_2::sluice::storage::storage_types::Throttle;
use super::bindings::{
    ByteRange, Capabilities, DeleteFailure, ListPage, ObjectMeta, PluginInfo, PutOptions, StoreConfig, UploadedPart,
    WitError,
};
use wasmtime::component::ResourceAny;

/// A 0.1.0 value as the current version's.
pub trait Up {
    type Current;
    fn up(self) -> Self::Current;
}

/// Values that are the same in every version.
macro_rules! same {
    ($($t:ty),*) => {$(
        impl Up for $t {
            type Current = $t;
            fn up(self) -> $t { self }
        }
    )*};
}
same!(u8, String, (), ResourceAny);

impl<T: Up> Up for Vec<T> {
    type Current = Vec<T::Current>;
    fn up(self) -> Self::Current {
        self.into_iter().map(Up::up).collect()
    }
}

impl<T: Up, E: Up> Up for Result<T, E> {
    type Current = Result<T::Current, E::Current>;
    fn up(self) -> Self::Current {
        self.map(Up::up).map_err(Up::up)
    }
}

/// A record whose fields all carry over as they are.
macro_rules! record {
    ($old:ty => $new:ident { $($field:ident),* }) => {
        impl Up for $old {
            type Current = $new;
            fn up(self) -> $new { $new { $($field: self.$field),* } }
        }
    };
}
record!(old::ObjectMeta => ObjectMeta { key, size, etag, modified_ms, metadata });
record!(old::UploadedPart => UploadedPart { part_number, etag });
record!(old::Throttle => Throttle { message, retry_after_ms });
record!(old::Capabilities => Capabilities {
    conditional_writes, ranged_reads, multipart_upload, max_object_size, max_put_size,
    min_part_size, max_part_size, max_parts, max_delete_batch, max_list_page
});

impl Up for old::ListPage {
    type Current = ListPage;
    fn up(self) -> ListPage {
        ListPage { objects: self.objects.up(), next_cursor: self.next_cursor }
    }
}

impl Up for old::DeleteFailure {
    type Current = DeleteFailure;
    fn up(self) -> DeleteFailure {
        DeleteFailure { key: self.key, error: self.error.up() }
    }
}

impl Up for old::PluginInfo {
    type Current = PluginInfo;
    fn up(self) -> PluginInfo {
        PluginInfo {
            name: self.name,
            version: self.version,
            description: self.description,
            schemes: self.schemes,
            capabilities: self.capabilities.up(),
            needs_directory: self.needs_directory,
            needs_sockets: false,
            settings: Vec::new(),
        }
    }
}

impl Up for old::Error {
    type Current = WitError;
    fn up(self) -> WitError {
        match self {
            old::Error::NotFound(m) => WitError::NotFound(m),
            old::Error::PreconditionFailed(m) => WitError::PreconditionFailed(m),
            old::Error::AccessDenied(m) => WitError::AccessDenied(m),
            old::Error::InvalidConfig(m) => WitError::InvalidConfig(m),
            old::Error::Unsupported(m) => WitError::Unsupported(m),
            old::Error::Transient(m) => WitError::Transient(m),
            old::Error::Throttled(t) => WitError::Throttled(t.up()),
            old::Error::Permanent(m) => WitError::Permanent(m),
        }
    }
}

/// The current version's arguments as 0.1.0's.
pub mod down {
    use super::*;

    pub fn config(c: &StoreConfig) -> old::StoreConfig {
        old::StoreConfig { url: c.url.clone(), settings: c.settings.clone() }
    }

    pub fn options(o: &PutOptions) -> old::PutOptions {
        use super::super::bindings::Precondition as P;
        let precondition = match &o.precondition {
            P::None => old::Precondition::None,
            P::IfAbsent => old::Precondition::IfAbsent,
            P::IfMatch(etag) => old::Precondition::IfMatch(etag.clone()),
        };
        old::PutOptions { precondition, metadata: o.metadata.clone(), content_sha256: o.content_sha256.clone() }
    }

    pub fn range(r: ByteRange) -> old::ByteRange {
        old::ByteRange { offset: r.offset, length: r.length }
    }

    pub fn parts(parts: &[UploadedPart]) -> Vec<old::UploadedPart> {
        parts.iter().map(|p| old::UploadedPart { part_number: p.part_number, etag: p.etag.clone() }).collect()
    }
}
