"""Domain errors. The gRPC interceptor (tunesmith.core.server) maps each class to one status code
and sends it in the standard form: a google.rpc.Status with

- ``BadRequest`` field violations (``field`` paths as spelled in the proto, e.g.
  ``spec.hyperparameters.learning_rate`` or ``rows[7].output``), one per problem;
- ``ErrorInfo`` with a stable ``reason`` (the upper-cased ``code``), domain ``tunesmith.dev``
  and string ``metadata`` (e.g. the existing job's id);
- for a refused data file, the per-row ``tunesmith.api.common.v1.ValidationReport``.

Raise these anywhere in a service; never build grpc status codes by hand. Anything else that
escapes a servicer is a bug: the client gets INTERNAL with a reference id and no exception text.
"""
from __future__ import annotations

from dataclasses import dataclass

ERROR_DOMAIN = "tunesmith.dev"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its proto path and what is wrong with it."""

    field: str
    description: str


class TunesmithError(Exception):
    """Base class.

    field: the offending input's proto path where there is one.
    code: stable lower-case code (JobError.code; its upper-case form is ErrorInfo.reason).
    violations: every bad field found (at least the one named by `field`).
    metadata: extra facts for ErrorInfo.metadata (e.g. {"job_id": ...}).
    """

    code = "internal"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None,
                 violations: list[FieldViolation] | None = None, metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code:
            self.code = code
        self.violations = list(violations or ([FieldViolation(field, message)] if field else []))
        self.metadata = {k: str(v) for k, v in (metadata or {}).items()}

    @property
    def reason(self) -> str:
        return self.code.upper()

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def prefixed(self, prefix: str) -> "TunesmithError":
        """The same error with every field path under `prefix` (e.g. "spec.method.lora")."""
        def join(path: str | None) -> str | None:
            if not path:
                return prefix
            return f"{prefix}{path}" if path.startswith("[") else f"{prefix}.{path}"

        out = type(self).__new__(type(self))
        out.__dict__.update(self.__dict__)
        Exception.__init__(out, self.message)
        out.field = join(self.field)
        out.violations = [FieldViolation(join(v.field) or "", v.description) for v in self.violations]
        return out


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
    """The object or the machine is in the wrong state for the request (FAILED_PRECONDITION)."""

    code = "failed_precondition"


class Unavailable(TunesmithError):
    """A dependency (another service, a backend) is not reachable (maps to UNAVAILABLE)."""

    code = "unavailable"


class ResourceExhausted(TunesmithError):
    """The service is at capacity (e.g. its request queue is full); retry later (maps to
    RESOURCE_EXHAUSTED, and to HTTP 429 on the inference service's HTTP API)."""

    code = "resource_exhausted"


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
    """A v1 RPC or field whose behaviour has not been built yet (maps to UNIMPLEMENTED)."""

    code = "unimplemented"


class Violations:
    """Collects every problem of a request, then raises them together as one InvalidArgument.

        v = Violations()
        v.check(hp.epochs >= 0, "spec.hyperparameters.epochs", "must be >= 0")
        v.raise_if_any()
    """

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def check(self, ok: bool, field: str, description: str) -> bool:
        if not ok:
            self.add(field, description)
        return ok

    def extend(self, error: TunesmithError) -> None:
        self.items.extend(error.violations or [FieldViolation(error.field or "", error.message)])

    def raise_if_any(self, cls: type[TunesmithError] = InvalidArgument) -> None:
        if not self.items:
            return
        first = self.items[0]
        more = f" (and {len(self.items) - 1} more problem(s))" if len(self.items) > 1 else ""
        raise cls(first.description + more, field=first.field, violations=self.items)
