"""The contract's `error` variant, raised as componentize-py wants it:
`raise Err(storage_types.Error_NotFound("..."))` makes the exported
function return `err(not-found("..."))`. Each helper returns the
exception, so call sites read `raise errors.not_found(...)`."""

import re

from componentize_py_types import Err
from wit_world.imports.storage_types import (
    Error_AccessDenied,
    Error_InvalidConfig,
    Error_NotFound,
    Error_Permanent,
    Error_PreconditionFailed,
    Error_Throttled,
    Error_Transient,
    Error_Unsupported,
    Throttle,
)


def not_found(msg):
    return Err(Error_NotFound(msg))


def precondition_failed(msg):
    return Err(Error_PreconditionFailed(msg))


def access_denied(msg):
    return Err(Error_AccessDenied(msg))


def invalid_config(msg):
    return Err(Error_InvalidConfig(msg))


def unsupported(msg):
    return Err(Error_Unsupported(msg))


def transient(msg):
    return Err(Error_Transient(msg))


def throttled(msg, retry_after_ms=None):
    return Err(Error_Throttled(Throttle(msg, retry_after_ms)))


def permanent(msg):
    return Err(Error_Permanent(msg))


def one_line(body):
    """An answer's body as one line of text: an HTML page by its title
    (or its text), whitespace collapsed."""
    title = re.search(r"<title>(.*?)</title>", body, re.IGNORECASE | re.DOTALL)
    if title:
        body = title.group(1)
    elif body.lstrip().startswith("<"):
        body = re.sub(r"<[^>]*>", " ", body)
    return " ".join(body.split())


def status_error(what, response, on_401=None):
    """The error an HTTP error status means (`what` names the operation
    and the object): 401/403 access denied, 404/410 not found, 409/412
    precondition failed, 408/5xx transient, 429 and 503 with Retry-After
    throttled, other statuses permanent. Up to 300 characters of the
    answer's body go into the message, for the operator, on one line;
    `on_401` says what a 401 means for this store."""
    msg = f"{what}: HTTP {response.status}"
    if response.status == 401 and on_401:
        msg += f" ({on_401})"
    detail = one_line(response.text())[:300]
    if detail:
        msg += f": {detail}"
    retry_after = response.header("retry-after")
    try:
        retry_after_ms = int(retry_after.strip()) * 1000 if retry_after else None
    except ValueError:
        retry_after_ms = None
    s = response.status
    if s in (401, 403):
        return access_denied(msg)
    if s in (404, 410):
        return not_found(msg)
    if s in (409, 412):
        return precondition_failed(msg)
    if s == 429 or (s == 503 and retry_after_ms is not None):
        return throttled(msg, retry_after_ms)
    if s == 408 or 500 <= s <= 599:
        return transient(msg)
    return permanent(msg)
