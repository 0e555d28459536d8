"""Builds the ServiceStatus every service returns from GetStatus."""
from __future__ import annotations

from tunesmith.api.common.v1 import common_pb2
from tunesmith.core.hookspecs import REGISTRY_KINDS
from tunesmith.core.plugins import PluginRegistry


def service_status(service: str, registry: PluginRegistry, info: dict[str, str] | None = None) -> common_pb2.ServiceStatus:
    """Loaded plugins (name, version, hooks, source), what they registered, and free-form info."""
    from tunesmith.core.plugins import _builtin_version

    status = common_pb2.ServiceStatus(service=service, version=_builtin_version(), info=info or {})
    for p in registry.describe():
        status.plugins.add(name=p["name"], version=p["version"], hooks=p["hooks"], source=p["source"])
    for kind in REGISTRY_KINDS.values():
        status.registered[kind].names.extend(registry.names(kind))
    return status
