"""A sluice storage plugin in Python: objects on a WebDAV server, over
`wasi:http`. Built with componentize-py against the `http-plugin` world
of wit/storage.wit (see README.md).

Objects are files below the replica's collection, created with their
parent collections (MKCOL) on first write and listed with PROPFIND, depth
1, one collection at a time (servers often refuse depth infinity). The
same layout as the bundled Rust plugin (plugins/webdav), so either reads
what the other wrote.

Not offered, and declared so in `info()`: conditional writes (a server's
ETag is often built from a modification time in whole seconds, so two
writes in one second can share one and a compare-and-swap on it would be
unsound) and multipart uploads (WebDAV cannot join parts on the server):
an object must fit one PUT, MAX_PUT_SIZE. Metadata lives in a sidecar
file beside the object (`.sluice-meta.NAME`, never listed), tied to the
object's ETag so that an overwrite without metadata does not inherit
stale values.

componentize-py finds the exports by name: the class `Backend` here for
the interface `backend`'s functions, and `Store` in the module `backend`
(backend.py) for its resource `store`.
"""

from urllib.parse import quote, unquote

import wit_world
from componentize_py_types import Err
from wit_world.exports import backend
from wit_world.imports import log
from wit_world.imports.storage_types import (
    Capabilities,
    DeleteFailure,
    ListPage,
    ObjectMeta,
    PluginInfo,
    Precondition_None_,
    Setting,
)

import errors
import multistatus
import wasi_http
from location import OWN_PREFIX, ConfigError, Location, check_key

VERSION = "0.1.0"
# The largest object: one PUT, held whole in the plugin's memory, and in
# Python more than once (the call's argument, the bytes object, a chunk
# in flight), inside the sandbox's 256 MiB.
MAX_PUT_SIZE = 64 << 20
# Keys per delete call and per list page.
MAX_BATCH = 1000

# No conditional writes and no multipart uploads (see above); objects up
# to one PUT, read back in ranges.
CAPABILITIES = Capabilities(
    conditional_writes=False,
    ranged_reads=True,
    multipart_upload=False,
    max_object_size=MAX_PUT_SIZE,
    max_put_size=MAX_PUT_SIZE,
    min_part_size=1,
    max_part_size=MAX_PUT_SIZE,
    max_parts=1,
    max_delete_batch=MAX_BATCH,
    max_list_page=MAX_BATCH,
)

SETTINGS = [
    Setting("webdav-url", "The WebDAV server, http[s]://host[:port][/path]; the replica URL's path "
            "lies below it (default: the replica URL's host, over http for webdav://, https for webdavs://)",
            False, False),
    Setting("webdav-username", "User name for HTTP Basic authentication (default: the replica URL's user, "
            "else none)", False, False),
    Setting("webdav-password", "Password for HTTP Basic authentication (default: the replica URL's password)",
            True, False),
]


class Backend(wit_world.exports.Backend):
    def info(self) -> PluginInfo:
        return PluginInfo(
            name="python-webdav",
            version=VERSION,
            description="WebDAV server, in Python (webdav://[user[:password]@]host[:port]/path, "
                        "webdavs:// for https)",
            schemes=["webdav", "webdavs"],
            capabilities=CAPABILITIES,
            needs_directory=False,
            needs_sockets=False,
            settings=SETTINGS,
        )


def segments_of(key):
    """A key's segments, or the contract's `invalid-config`."""
    try:
        return check_key(key)
    except ConfigError as e:
        raise errors.invalid_config(str(e)) from None


def sidecar(segments):
    """Where the metadata of the object at `segments` lives."""
    return segments[:-1] + [f"{OWN_PREFIX}meta.{segments[-1]}"]


def encode_metadata(etag, metadata):
    """Sidecar text: the object's ETag on the first line, then `key=value`
    lines, all percent-encoded."""
    lines = [quote(etag, safe="")] + [f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in metadata]
    return ("\n".join(lines) + "\n").encode("utf-8")


def decode_metadata(text, etag):
    """The metadata in a sidecar, if it was written for the object whose
    ETag is `etag` (else none: the object was overwritten since)."""
    lines = text.splitlines()
    if not lines or unquote(lines[0]) != etag:
        return []
    return [(unquote(k), unquote(v)) for k, _, v in (l.partition("=") for l in lines[1:] if "=" in l)]


class Store(backend.Store):
    """One replica's collection on one server. Keeps nothing but its
    location: the host drops the whole instance after each short batch of
    calls, and the suite reads with a new instance what an old one wrote."""

    def __init__(self, at: Location):
        self.at = at

    @classmethod
    def open(cls, config):
        try:
            return cls(Location.parse(config.url, dict(config.settings)))
        except ConfigError as e:
            raise errors.invalid_config(str(e)) from None

    def capabilities(self):
        """What this store can do: all the plugin declares, whatever the
        configuration."""
        return CAPABILITIES

    # -- HTTP -------------------------------------------------------------

    def request(self, method, url, headers=(), body=b""):
        headers = list(headers)
        if self.at.authorization:
            headers.append(("authorization", self.at.authorization))
        return wasi_http.send(method, url, headers, body)

    def status_error(self, what, response):
        """The contract's error for an HTTP error status, saying what to
        do about a 401."""
        if self.at.authorization:
            on_401 = "the server refused the user name and password"
        else:
            on_401 = "the server wants a user name and password: set webdav-username and webdav-password"
        return errors.status_error(what, response, on_401)

    def make_collections(self, dirs):
        """Create the collections from the server's root down to `dirs`
        below the replica's root; existing ones answer 405, which is fine."""
        top = Location(self.at.origin, [], None)
        path = self.at.root + dirs
        for depth in range(1, len(path) + 1):
            url = top.url(path[:depth], collection=True)
            r = self.request("MKCOL", url)
            if not (200 <= r.status <= 299 or r.status in (301, 405)):
                raise self.status_error(f"MKCOL {url}", r)
            if r.status == 201:
                log.emit(log.Level.DEBUG, f"created collection {url}")

    def put_file(self, segments, data):
        """PUT, creating the parent collections when the server says they
        are missing (409, or 404 from some servers)."""
        url = self.at.url(segments)
        headers = [("content-type", "application/octet-stream")]
        r = self.request("PUT", url, headers, data)
        if r.status in (404, 409):
            self.make_collections(segments[:-1])
            r = self.request("PUT", url, headers, data)
        if not 200 <= r.status <= 299:
            raise self.status_error(f"PUT {url}", r)
        return r

    def stat(self, key, segments):
        url = self.at.url(segments)
        r = self.request("HEAD", url)
        if not 200 <= r.status <= 299:
            raise self.status_error(f"HEAD {url}", r)
        try:
            size = int((r.header("content-length") or "0").strip())
        except ValueError:
            size = 0
        etag = multistatus.bare_etag(r.header("etag") or "")
        modified = r.header("last-modified")
        return ObjectMeta(key, size, etag, multistatus.http_date_ms(modified) if modified else None, [])

    def read_metadata(self, segments, etag):
        url = self.at.url(sidecar(segments))
        r = self.request("GET", url)
        if r.status == 404:
            return []
        if r.status != 200:
            raise self.status_error(f"GET {url} (metadata)", r)
        return decode_metadata(r.text(), etag)

    def walk(self, directory, prefix):
        """Every object below the collection `directory` whose key starts
        with `prefix`, as {key: ObjectMeta}, one collection at a time."""
        found = {}
        pending = [directory]
        while pending:
            here = pending.pop()
            url = self.at.url(here, collection=True)
            r = self.request("PROPFIND", url, [("depth", "1"), ("content-type", "application/xml; charset=utf-8")],
                             multistatus.PROPFIND_BODY)
            if r.status == 404:
                continue
            if r.status != 207:
                raise self.status_error(f"PROPFIND {url}", r)
            try:
                entries = multistatus.parse(r.body)
            except ValueError as e:
                raise errors.permanent(f"PROPFIND {url}: {e}") from None
            here_key = "/".join(here)
            for e in entries:
                key = self.at.key_of(e.href)
                if key is None:
                    continue
                key = key.rstrip("/")
                name = key.rsplit("/", 1)[-1]
                if key == here_key or not key or name.startswith(OWN_PREFIX):
                    continue
                if e.collection:
                    under = key + "/"
                    if under.startswith(prefix) or prefix.startswith(under):
                        pending.append(key.split("/"))
                elif key.startswith(prefix):
                    found[key] = ObjectMeta(key, e.size, e.etag, e.modified_ms, [])
        return found

    def delete_one(self, key):
        """Delete an object and its sidecar; either missing is fine. The
        sidecar first: a failure in between leaves an object without
        metadata, never metadata without its object."""
        segments = segments_of(key)
        for names in (sidecar(segments), segments):
            url = self.at.url(names)
            r = self.request("DELETE", url)
            if not (200 <= r.status <= 299 or r.status == 404):
                raise self.status_error(f"DELETE {url}", r)

    # -- the contract -----------------------------------------------------

    def put(self, key, data, options):
        segments = segments_of(key)
        if len(data) > MAX_PUT_SIZE:
            raise errors.invalid_config(
                f"{key}: put of {len(data)} bytes exceeds this plugin's max-put-size {MAX_PUT_SIZE} "
                "(WebDAV has no multipart upload)")
        if not isinstance(options.precondition, Precondition_None_):
            # Declared in info(): an ETag built from whole-second times
            # cannot guard a compare-and-swap, so none is pretended.
            raise errors.unsupported("conditional writes: WebDAV ETags cannot guard them (see plugin info)")
        r = self.put_file(segments, data)
        etag = r.header("etag")
        etag = multistatus.bare_etag(etag) if etag else self.stat(key, segments).etag
        if options.metadata:
            self.put_file(sidecar(segments), encode_metadata(etag, options.metadata))
        return ObjectMeta(key, len(data), etag, None, list(options.metadata))

    def get(self, key, range):
        url = self.at.url(segments_of(key))
        headers = []
        if range is not None and range.length > 0:
            headers.append(("range", f"bytes={range.offset}-{range.offset + range.length - 1}"))
        r = self.request("GET", url, headers)
        if r.status == 206:
            return r.body
        if r.status == 200:
            # A server that ignores Range sends everything: cut it here.
            if range is None:
                return r.body
            return r.body[range.offset:range.offset + range.length]
        if r.status == 416:
            # A range that starts at or past the end selects nothing.
            return b""
        raise self.status_error(f"GET {url}", r)

    def head(self, key):
        segments = segments_of(key)
        meta = self.stat(key, segments)
        meta.metadata = self.read_metadata(segments, meta.etag)
        return meta

    def list(self, prefix, cursor, max_keys):
        directory = prefix.rsplit("/", 1)[0].split("/") if "/" in prefix else []
        if any(s in ("", ".", "..") for s in directory):
            raise errors.invalid_config(f"invalid prefix {prefix!r}: no empty, `.` or `..` segments")
        found = self.walk(directory, prefix)
        limit = min(max(max_keys, 1), MAX_BATCH)
        # Python compares strings by code point, which for UTF-8 is the
        # contract's ascending byte order.
        keys = sorted(k for k in found if cursor is None or k > cursor)
        page = keys[:limit]
        more = len(keys) > limit
        return ListPage([found[k] for k in page], page[-1] if more else None)

    def delete(self, keys):
        if len(keys) > MAX_BATCH:
            raise errors.invalid_config(f"delete of {len(keys)} keys exceeds max-delete-batch {MAX_BATCH}")
        for key in keys:
            segments_of(key)  # a bad key fails the call, as with every other function
        failures = []
        for key in keys:
            try:
                self.delete_one(key)
            except Err as e:
                failures.append(DeleteFailure(key, e.value))
        return failures

    def create_upload(self, key, options):
        raise errors.unsupported("multipart upload: WebDAV cannot join parts (see plugin info)")

    def upload_part(self, key, upload_id, part_number, data, content_sha256):
        raise errors.unsupported("multipart upload: WebDAV cannot join parts (see plugin info)")

    def complete_upload(self, key, upload_id, parts):
        raise errors.unsupported("multipart upload: WebDAV cannot join parts (see plugin info)")

    def abort_upload(self, key, upload_id):
        raise errors.unsupported("multipart upload: WebDAV cannot join parts (see plugin info)")
