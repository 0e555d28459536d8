"""What every service process shares: storage, plugin registry, model store (built once)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from tunesmith.core.plugins import PluginRegistry, get_registry
from tunesmith.core.storage import LocalStorage, open_storage


@dataclass
class Runtime:
    storage: LocalStorage
    registry: PluginRegistry

    @classmethod
    def create(cls, root: str | None = None, registry: PluginRegistry | None = None) -> "Runtime":
        registry = registry or get_registry()
        return cls(open_storage(root, registry), registry)

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
