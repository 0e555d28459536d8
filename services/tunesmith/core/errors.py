"""Domain errors. The gRPC interceptor (tunesmith.core.server) maps each class to one status code.

Raise these anywhere in a service; never build grpc status codes by hand.
"""
from __future__ import annotations


class TunesmithError(Exception):
    """Base class. `field` names the offending input where there is one."""

    code = "internal"

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidArgument(TunesmithError):
    """Bad input from the caller (maps to INVALID_ARGUMENT)."""

    code = "invalid_argument"


class NotFound(TunesmithError):
    """An unknown id or name (maps to NOT_FOUND)."""

    code = "not_found"


class AlreadyExists(TunesmithError):
    """A name that is already taken (maps to ALREADY_EXISTS)."""

    code = "already_exists"


class FailedPrecondition(TunesmithError):
    """The object is in the wrong state for the request (maps to FAILED_PRECONDITION)."""

    code = "failed_precondition"


class Unavailable(TunesmithError):
    """A dependency (another service, a backend) is not reachable (maps to UNAVAILABLE)."""

    code = "unavailable"


class PluginError(TunesmithError):
    """A plugin is broken or conflicts with another (raised at start-up)."""

    code = "plugin_error"


class StorageKeyError(InvalidArgument):
    """A storage key that is absolute, contains '..', or escapes the storage root."""

    code = "invalid_storage_key"


class DataValidationError(InvalidArgument):
    """A dataset failed validation; `report` holds per-row issues (row, field, code, message)."""

    code = "invalid_dataset"

    def __init__(self, message: str, *, report: dict | None = None, field: str | None = None):
        super().__init__(message, field=field)
        self.report = report or {}


class Unimplemented(TunesmithError):
    """A v1 RPC whose behaviour has not been built yet (maps to UNIMPLEMENTED)."""

    code = "unimplemented"
