"""The answer to PROPFIND (RFC 4918 `multistatus`): one entry per
resource, with what listing and `head` need. Pure Python (the standard
library's ElementTree, which componentize-py bundles with expat)."""

import calendar
import xml.etree.ElementTree as ElementTree
import xml.parsers.expat  # noqa: F401 (fails the build, not a PROPFIND, if missing)

# What PROPFIND asks for: size, ETag, modification time, and whether the
# resource is a collection.
PROPFIND_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>\n'
    b'<propfind xmlns="DAV:"><prop><resourcetype/><getcontentlength/><getetag/>'
    b"<getlastmodified/></prop></propfind>"
)

MONTHS = {m: i for i, m in enumerate(["Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1)}


class Entry:
    """One resource of a multistatus answer."""

    def __init__(self, href):
        self.href = href  # as the server wrote it: a path or an absolute URL
        self.collection = False
        self.size = 0
        self.etag = ""  # without quotes
        self.modified_ms = None

    def __repr__(self):
        return f"Entry({self.href!r}, collection={self.collection}, size={self.size}, etag={self.etag!r})"


def _local(tag):
    """An element's name without its namespace (`{DAV:}href` -> `href`)."""
    return tag.rsplit("}", 1)[-1]


def _children(element, name):
    return [c for c in element if _local(c.tag) == name]


def _text_of(element, name):
    for c in element:
        if _local(c.tag) == name:
            return c.text or ""
    return None


def parse(body):
    """Every resource of the answer, with the properties that came back
    with status 200 in its `propstat`. Raises ValueError on anything that
    is not a multistatus document."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as e:
        raise ValueError(f"not XML: {e}") from None
    if _local(root.tag) != "multistatus":
        raise ValueError(f"expected a DAV multistatus answer, got <{_local(root.tag)}>")
    out = []
    for response in _children(root, "response"):
        href = _text_of(response, "href")
        if href is None:
            continue
        entry = Entry(href.strip())
        for propstat in _children(response, "propstat"):
            status = _text_of(propstat, "status")
            if status is not None and " 200" not in status:
                continue
            for prop in _children(propstat, "prop"):
                for p in prop:
                    name = _local(p.tag)
                    if name == "resourcetype":
                        entry.collection |= bool(_children(p, "collection"))
                    elif name == "getcontentlength" and (p.text or "").strip():
                        try:
                            entry.size = int(p.text.strip())
                        except ValueError:
                            raise ValueError(f"bad getcontentlength `{p.text}`") from None
                    elif name == "getetag" and p.text:
                        entry.etag = bare_etag(p.text)
                    elif name == "getlastmodified" and p.text:
                        entry.modified_ms = http_date_ms(p.text.strip())
        out.append(entry)
    return out


def bare_etag(etag):
    """An ETag without its quotes and weakness marker, so values from
    headers and from listings compare equal."""
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"')


def http_date_ms(date):
    """Milliseconds since the epoch of an HTTP date
    (`Sun, 06 Nov 1994 08:49:37 GMT`), None for anything else."""
    try:
        _, day, month, year, clock, zone = date.split()
        hour, minute, second = (int(x) for x in clock.split(":"))
        if zone != "GMT":
            return None
        t = calendar.timegm((int(year), MONTHS[month], int(day), hour, minute, second, 0, 0, 0))
    except (ValueError, KeyError):
        return None
    return t * 1000
