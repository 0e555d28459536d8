"""What every service process shares: storage, plugin registry, model store (built once)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property

from tunesmith.core.plugins import PluginRegistry, get_registry
from tunesmith.core.storage import LocalStorage, open_storage


@dataclass
class Runtime:
    storage: LocalStorage
    registry: PluginRegistry
    #: Other services' gRPC addresses by short name ("inference", ...), for the calls one service
    #: makes to another (the evaluator's model judge). From TUNESMITH_<SERVICE>_ADDRESS; `tunesmith up`
    #: and `tunesmith demo` set them. Services talk through gRPC and storage, never each other's code.
    peers: dict[str, str] = field(default_factory=lambda: peers_from_env())

    @classmethod
    def create(cls, root: str | None = None, registry: PluginRegistry | None = None) -> "Runtime":
        registry = registry or get_registry()
        return cls(open_storage(root, registry), registry)

    def require_peer(self, service: str, *, needed_by: str, field: str) -> str:
        """The gRPC address of `service`, or FailedPrecondition (code no_<service>_service)
        saying that `needed_by` needs it and how to set it."""
        from tunesmith.core.errors import FailedPrecondition

        address = self.peers.get(service)
        if not address:
            raise FailedPrecondition(
                f"{needed_by} needs the {service} service, and this process has no address for it "
                f"(set TUNESMITH_{service.upper()}_ADDRESS; `tunesmith up` sets it)", field=field,
                code=f"no_{service}_service")
        return address

    @cached_property
    def models(self):
        from tunesmith.core.models import ModelStore

        return ModelStore(self.storage)

    @cached_property
    def datasets(self):
        """Typed, read-only dataset records (tunesmith.core.formats.dataset.DatasetRecords).
        The data service, which writes them, keeps its own proto RecordStore."""
        from tunesmith.core.formats.dataset import DatasetRecords

        return DatasetRecords(self.storage)


def peers_from_env(environ=None) -> dict[str, str]:
    """{"inference": "localhost:50054", ...} from TUNESMITH_<SERVICE>_ADDRESS variables."""
    environ = os.environ if environ is None else environ
    out = {}
    for service in ("data", "trainer", "evaluator", "inference"):
        address = environ.get(f"TUNESMITH_{service.upper()}_ADDRESS", "").strip()
        if address:
            out[service] = address
    return out
