"""Built-in storage backend: a local folder or shared volume (scheme "file")."""
from __future__ import annotations

from tunesmith.core.plugins import hookimpl
from tunesmith.core.storage import LocalStorage


@hookimpl
def register_storage_backends(register):
    register("file", LocalStorage)
