"""Where a replica lives on a WebDAV server, from Litestream's URL form
`webdav[s]://[user[:password]@]host[:port]/path` and the settings
`webdav-url` (the server, overriding the URL's host), `webdav-username`
and `webdav-password`, from the configuration or the URL's query.

Pure Python (no WASI imports), so `python3 -m unittest` runs its tests
natively; see test_pure.py.
"""

import base64
from urllib.parse import quote, unquote

# Names starting with this are the plugin's own files (metadata
# sidecars): never listed, and refused as keys. The same layout as the
# bundled Rust plugin, so either can read what the other wrote.
OWN_PREFIX = ".sluice-"

# Bytes left unescaped in a path segment besides RFC 3986's unreserved
# set: the sub-delimiters and `:` `@`, which servers accept as they are.
SEGMENT_SAFE = "!$&'()*+,;=:@"


class ConfigError(ValueError):
    """A wrong URL, setting or key: the contract's `invalid-config`."""


def decode(s):
    """Percent-decode `s`, refusing what is not UTF-8 once decoded."""
    try:
        return unquote(s, errors="strict")
    except UnicodeDecodeError:
        raise ConfigError(f"`{s}` is not valid UTF-8 once decoded") from None


def path_segments(path):
    """A URL path's non-empty segments, percent-decoded."""
    return [decode(s) for s in path.split("/") if s]


def split_server(server):
    """`scheme://authority/path` into (`scheme://authority`, `/path`)."""
    scheme, sep, rest = server.partition("://")
    if not sep:
        raise ConfigError(f"webdav-url `{server}` is not a URL")
    if scheme not in ("http", "https"):
        raise ConfigError(f"webdav-url `{server}` must be http:// or https://")
    cut = rest.find("/")
    if cut < 0:
        cut = len(rest)
    return f"{scheme}://{rest[:cut]}", rest[cut:]


def query_settings(query):
    """The `name=value` pairs of a URL query, percent-decoded."""
    pairs = {}
    for pair in query.split("&"):
        if pair:
            k, _, v = pair.partition("=")
            pairs[decode(k)] = decode(v)
    return pairs


def check_key(key):
    """A key's segments. Keys are relative, `/`-separated, with no empty,
    `.` or `..` segment (the contract's rule), and none may name one of
    this plugin's own files."""
    segments = key.split("/")
    if not key or "\0" in key or any(s in ("", ".", "..") for s in segments):
        raise ConfigError(
            f"invalid key {key!r}: keys are relative, `/`-separated, without empty, `.` or `..` segments"
        )
    if any(s.startswith(OWN_PREFIX) for s in segments):
        raise ConfigError(f"key {key!r}: names starting with {OWN_PREFIX} are the plugin's own")
    return segments


class Location:
    """A replica's place: the server's origin (`http[s]://host[:port]`),
    the replica's collection as decoded path segments below it, and the
    `Authorization` header value, if a user name was given."""

    def __init__(self, origin, root, authorization):
        self.origin = origin
        self.root = root
        self.authorization = authorization

    @classmethod
    def parse(cls, url, settings):
        """From the replica URL and the settings (a dict)."""
        scheme, sep, rest = url.partition("://")
        if not sep:
            raise ConfigError(f"not a webdav URL: {url}")
        http = {"webdav": "http", "webdavs": "https"}.get(scheme)
        if http is None:
            raise ConfigError(f"scheme `{scheme}` is not webdav:// or webdavs://")
        rest = rest.split("#", 1)[0]
        rest, _, query = rest.partition("?")
        # Settings may come in the URL's query (`?webdav-url=...`); the
        # host checks them but passes only the configured ones, which win.
        settings = {**query_settings(query), **settings}
        cut = rest.find("/")
        if cut < 0:
            cut = len(rest)
        authority, path = rest[:cut], rest[cut:]
        user = password = None
        userinfo, at, host = authority.rpartition("@")
        if at:
            name, colon, secret = userinfo.partition(":")
            user = decode(name)
            password = decode(secret) if colon else None
        else:
            host = authority
        origin = f"{http}://{host}"
        root = path_segments(path)
        server = settings.get("webdav-url")
        if server:
            # The server as a URL of its own: its path is where the WebDAV
            # share starts; the replica URL's path lies below it.
            origin, base_path = split_server(server)
            root = path_segments(base_path) + root
        elif not host:
            raise ConfigError(f"{url}: a host is required (webdav://host[:port]/path), or set webdav-url")
        if "webdav-username" in settings:
            user = settings["webdav-username"]
        if "webdav-password" in settings:
            password = settings["webdav-password"]
        authorization = None
        if user is not None:
            pair = f"{user}:{password or ''}".encode("utf-8")
            authorization = "Basic " + base64.b64encode(pair).decode("ascii")
        return cls(origin, root, authorization)

    def url(self, segments, collection=False):
        """The URL of `segments` below the root; a collection's ends in `/`,
        as WebDAV servers want."""
        url = self.origin
        for s in self.root + list(segments):
            url += "/" + quote(s, safe=SEGMENT_SAFE)
        if collection or not (self.root or segments):
            url += "/"
        return url

    def key_of(self, href):
        """The key an `href` of a multistatus answer names, if it lies below
        the root (None for the root itself and for anything outside)."""
        scheme, sep, rest = href.partition("://")
        if sep:
            cut = rest.find("/")
            href = rest[cut:] if cut >= 0 else ""
        try:
            segments = path_segments(href)
        except ConfigError:
            return None
        skip = len(self.root)
        if len(segments) <= skip or segments[:skip] != self.root:
            return None
        return "/".join(segments[skip:])
