"""Builds the ServiceStatus every service returns from GetStatus."""
from __future__ import annotations

from tunesmith.api.common.v1 import common_pb2
from tunesmith.core.hookspecs import REGISTRY_KINDS
from tunesmith.core.plugins import PluginRegistry, tunesmith_version


def service_status(service: str, registry: PluginRegistry, info: dict[str, str] | None = None) -> common_pb2.ServiceStatus:
    """Loaded plugins (name, version, hooks, source), what they registered, and free-form info."""
    status = common_pb2.ServiceStatus(service=service, version=tunesmith_version(), info=info or {})
    for p in registry.describe():
        status.plugins.add(name=p["name"], version=p["version"], hooks=p["hooks"], source=p["source"])
    for kind in REGISTRY_KINDS.values():
        status.registered[kind].names.extend(registry.names(kind))
    return status
