"""Small plain-Python views of proto messages (frozen dataclasses)."""
from __future__ import annotations

from dataclasses import dataclass, field

from tunesmith.api.common.v1 import common_pb2

__all__ = ["PluginInfo", "ServiceStatus", "TERMINAL_STATES"]

# Job states after which nothing changes.
TERMINAL_STATES = frozenset(
    {
        common_pb2.JOB_STATE_SUCCEEDED,
        common_pb2.JOB_STATE_FAILED,
        common_pb2.JOB_STATE_CANCELLED,
    }
)


@dataclass(frozen=True)
class PluginInfo:
    """One plugin loaded by a service. `source` is "builtin" or "entrypoint"."""

    name: str
    version: str
    hooks: list[str] = field(default_factory=list)
    source: str = ""

    @classmethod
    def from_proto(cls, msg: common_pb2.PluginInfo) -> PluginInfo:
        return cls(name=msg.name, version=msg.version, hooks=list(msg.hooks), source=msg.source)


@dataclass(frozen=True)
class ServiceStatus:
    """What a service reports about itself (GetStatus).

    `service` is "data", "trainer", "evaluator" or "inference"; `registered` maps a kind of
    plugin-registered name ("peft_methods", "templates", ...) to the names; `info` holds
    free-form facts (storage root, device, inference backend, ...).
    """

    service: str
    version: str
    plugins: list[PluginInfo] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, msg: common_pb2.ServiceStatus) -> ServiceStatus:
        return cls(
            service=msg.service,
            version=msg.version,
            plugins=[PluginInfo.from_proto(p) for p in msg.plugins],
            registered={kind: list(names.names) for kind, names in sorted(msg.registered.items())},
            info=dict(sorted(msg.info.items())),
        )

    def plugin(self, name: str) -> PluginInfo | None:
        """The loaded plugin called `name`, or None."""
        return next((p for p in self.plugins if p.name == name), None)
