"""componentize-py looks for the implementation of a resource exported by
an interface in a module named after the interface: the `store` of
interface `backend` is `backend.Store`. It lives in app.py."""

from app import Store  # noqa: F401
