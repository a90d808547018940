"""A small blocking HTTP client over `wasi:http` 0.2, the component's
only way to the network. The host carries the requests and refuses
hosts outside the replica's allowlist.

The rules of the WASI resources, which Python's garbage collector does
not know about: a child resource (a stream, a pollable) must be dropped
before its parent (a body, a future) is finished or dropped, so every one
is used in a `with` block, which drops it at once on leaving.
"""

from componentize_py_types import Err, Ok
from wit_world.imports import outgoing_handler, streams
from wit_world.imports.types import (
    ErrorCode_ConnectionLimitReached,
    ErrorCode_ConnectionReadTimeout,
    ErrorCode_ConnectionRefused,
    ErrorCode_ConnectionTerminated,
    ErrorCode_ConnectionTimeout,
    ErrorCode_ConnectionWriteTimeout,
    ErrorCode_DestinationNotFound,
    ErrorCode_DestinationUnavailable,
    ErrorCode_DnsError,
    ErrorCode_DnsTimeout,
    ErrorCode_HttpProtocolError,
    ErrorCode_HttpRequestDenied,
    ErrorCode_HttpResponseIncomplete,
    ErrorCode_HttpResponseTimeout,
    ErrorCode_InternalError,
    ErrorCode_TlsProtocolError,
    Fields,
    IncomingBody,
    Method_Delete,
    Method_Get,
    Method_Head,
    Method_Other,
    Method_Post,
    Method_Put,
    OutgoingBody,
    OutgoingRequest,
    RequestOptions,
    Scheme_Http,
    Scheme_Https,
)

import errors

# Timeouts, nanoseconds: connecting, the first byte of the answer (a
# large PUT is acknowledged only once the server has it), and a stall
# between two chunks of the answer.
CONNECT_TIMEOUT_NS = 10_000_000_000
FIRST_BYTE_TIMEOUT_NS = 120_000_000_000
BETWEEN_BYTES_TIMEOUT_NS = 60_000_000_000
# Bytes asked for per read of an answer's body.
READ_CHUNK = 256 * 1024

METHODS = {"GET": Method_Get(), "HEAD": Method_Head(), "PUT": Method_Put(),
           "POST": Method_Post(), "DELETE": Method_Delete()}

# wasi:http error codes that a retry can heal.
TRANSIENT = (
    ErrorCode_DnsTimeout, ErrorCode_DnsError, ErrorCode_DestinationNotFound,
    ErrorCode_DestinationUnavailable, ErrorCode_ConnectionRefused,
    ErrorCode_ConnectionTerminated, ErrorCode_ConnectionTimeout,
    ErrorCode_ConnectionReadTimeout, ErrorCode_ConnectionWriteTimeout,
    ErrorCode_ConnectionLimitReached, ErrorCode_HttpResponseIncomplete,
    ErrorCode_HttpResponseTimeout, ErrorCode_HttpProtocolError,
    ErrorCode_TlsProtocolError, ErrorCode_InternalError,
)


class Response:
    """A whole answer: status, headers (names in lowercase), body."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        """The first value of header `name`, or None."""
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def text(self):
        return self.body.decode("utf-8", errors="replace")


def error_code(code, authority):
    """A `wasi:http` error code as the contract's error: network trouble is
    transient, a refused destination access-denied, the rest permanent."""
    if isinstance(code, ErrorCode_HttpRequestDenied):
        return errors.access_denied(
            f"the host refused a request to {authority}: it is not on this replica's network allowlist")
    if isinstance(code, TRANSIENT):
        return errors.transient(f"request to {authority} failed: {code}")
    return errors.permanent(f"request to {authority} failed: {code}")


def stream_error(e, authority):
    if isinstance(e, streams.StreamError_Closed):
        return errors.transient(f"connection to {authority} closed early")
    return errors.transient(f"connection to {authority} failed: {e.value.to_debug_string()}")


def split_url(url):
    """`http[s]://authority/path` into its scheme, authority and path."""
    scheme, _, rest = url.partition("://")
    cut = rest.find("/")
    if cut < 0:
        return scheme, rest, "/"
    return scheme, rest[:cut], rest[cut:]


def send(method, url, headers=(), body=b""):
    """Send a request and read the whole answer. Connection trouble raises
    the contract's error; HTTP error statuses do not (only the caller knows
    what a 404 means)."""
    scheme, authority, path = split_url(url)
    fields = [(k.lower(), v.encode("utf-8")) for k, v in headers]
    if body or method in ("PUT", "POST"):
        fields.append(("content-length", str(len(body)).encode("ascii")))
    try:
        request = OutgoingRequest(Fields.from_list(fields))
    except Err as e:
        raise errors.invalid_config(f"bad request header: {e.value}") from None
    try:
        request.set_method(METHODS.get(method) or Method_Other(method))
        request.set_scheme(Scheme_Https() if scheme == "https" else Scheme_Http())
        request.set_authority(authority)
        request.set_path_with_query(path)
    except Err:
        raise errors.invalid_config(f"bad method, host or path in {method} {url}") from None
    outgoing = request.body()
    options = RequestOptions()
    for set_timeout, ns in ((options.set_connect_timeout, CONNECT_TIMEOUT_NS),
                            (options.set_first_byte_timeout, FIRST_BYTE_TIMEOUT_NS),
                            (options.set_between_bytes_timeout, BETWEEN_BYTES_TIMEOUT_NS)):
        try:
            set_timeout(ns)
        except Err:
            pass  # the host's own default applies
    # Hand the request over before writing the body: the host streams it
    # out as it arrives, so writing first would fill its buffer and hang.
    try:
        future = outgoing_handler.handle(request, options)
    except Err as e:
        raise error_code(e.value, authority) from None
    with future:
        try:
            write_body(outgoing, body, authority)
        except Err as write_error:
            # A refused or failed request shows first as a broken body
            # stream; the answer's future carries the real reason.
            with future.subscribe() as ready:
                ready.block()
            answer = future.get()
            if isinstance(answer, Ok) and isinstance(answer.value, Err):
                raise error_code(answer.value.value, authority) from None
            raise write_error
        return receive(future, authority)


def write_body(outgoing, body, authority):
    """Write `body` whole, as fast as the host takes it, and finish."""
    view = memoryview(body)
    with outgoing.write() as stream:
        while view:
            try:
                room = stream.check_write()
                if room == 0:
                    with stream.subscribe() as ready:
                        ready.block()
                    continue
                n = min(room, len(view))
                stream.write(bytes(view[:n]))
            except Err as e:
                raise stream_error(e.value, authority) from None
            view = view[n:]
        # No flush after the last write: the host ends the stream once
        # content-length bytes arrived, and a flush would then fail.
    try:
        OutgoingBody.finish(outgoing, None)
    except Err as e:
        raise error_code(e.value, authority) from None


def receive(future, authority):
    """Wait for the answer and read it whole."""
    with future.subscribe() as ready:
        ready.block()
    answer = future.get()
    if answer is None:
        raise errors.transient(f"no answer from {authority} after waiting for it")
    if isinstance(answer, Err):
        raise errors.permanent("the answer was already taken")
    # Ok(Ok(response)), or Ok(Err(error-code)) when the request failed.
    if isinstance(answer.value, Err):
        raise error_code(answer.value.value, authority)
    with answer.value.value as response:
        status = response.status()
        with response.headers() as fields:
            headers = [(k.lower(), v.decode("utf-8", errors="replace")) for k, v in fields.entries()]
        incoming = response.consume()
        chunks = []
        with incoming.stream() as stream:
            while True:
                try:
                    chunks.append(stream.blocking_read(READ_CHUNK))
                except Err as e:
                    if isinstance(e.value, streams.StreamError_Closed):
                        break
                    raise stream_error(e.value, authority) from None
        with IncomingBody.finish(incoming):
            pass
    return Response(status, headers, b"".join(chunks))
