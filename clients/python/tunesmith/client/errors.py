"""SDK exceptions, and the translation of grpc.RpcError into them.

Every client method goes through `translate_errors`, so callers only ever see
`TunesmithClientError` subclasses, never a raw `grpc.RpcError`. The original error stays
available as `err.rpc_error`.

The services send errors in the standard form: a google.rpc.Status whose details hold
- `BadRequest` field violations: `err.violations`, a list of `FieldViolation(field, description)`
  with proto field paths such as "spec.hyperparameters.learning_rate" or "rows[7].output";
  `err.field` is the first one's path;
- `ErrorInfo`: `err.reason` (a stable code such as "INVALID_DATASET", "UNKNOWN_MODEL",
  "IDEMPOTENCY_KEY_REUSED") and `err.metadata` (e.g. {"job_id": ...});
- for a refused data file, the per-row report: `err.report` (a
  `tunesmith.api.common.v1.ValidationReport`: the first issues, and counts of all of them).
`str(err)` is the status message; `err.message` is it without a leading "field: ".
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

__all__ = [
    "TunesmithClientError",
    "InvalidArgumentError",
    "NotFoundError",
    "AlreadyExistsError",
    "FailedPreconditionError",
    "UnavailableError",
    "TunesmithConnectionError",
    "DeadlineExceededError",
    "ResourceExhaustedError",
    "UnimplementedError",
    "InternalError",
    "FieldViolation",
    "CONNECT_HINT",
    "from_rpc_error",
    "translate_errors",
]

CONNECT_HINT = "is the service running? try `tunesmith up`"

# Transport-level failures (nothing answered), as opposed to a service reporting that one of
# its own dependencies is unavailable.
_CONNECTION_MARKERS = (
    "failed to connect to all addresses",
    "connection refused",
    "dns resolution failed",
    "name resolution failure",
    "socket closed",
    "connection reset",
    "no route to host",
    "network is unreachable",
)


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its proto path and what is wrong with it."""

    field: str
    description: str


class TunesmithClientError(Exception):
    """Base class of every SDK error.

    Attributes: `code` (grpc.StatusCode or None), `details` (the status message), `field` (the
    first offending field's path, or None), `message` (details without the "field: " prefix),
    `violations` (every FieldViolation), `reason` (ErrorInfo reason, or None), `metadata`
    (ErrorInfo metadata), `report` (a ValidationReport for refused data files, or None),
    `address` (the service address where known), `rpc_error` (the original grpc.RpcError).
    """

    def __init__(
        self,
        details: str,
        *,
        code: grpc.StatusCode | None = None,
        address: str | None = None,
        rpc_error: grpc.RpcError | None = None,
        field: str | None = None,
        violations: list[FieldViolation] | None = None,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
        report: Any = None,
    ):
        super().__init__(details)
        self.details = details
        self.code = code
        self.address = address
        self.rpc_error = rpc_error
        self.violations: list[FieldViolation] = list(violations or [])
        self.field: str | None = field or (self.violations[0].field if self.violations else None)
        prefix = f"{self.field}: " if self.field else ""
        self.message: str = details[len(prefix):] if prefix and details.startswith(prefix) else (details or "")
        self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})
        self.report = report

    def __str__(self) -> str:
        return self.details


class InvalidArgumentError(TunesmithClientError):
    """INVALID_ARGUMENT (or OUT_OF_RANGE): bad input; `field` names it where the service said."""


class NotFoundError(TunesmithClientError):
    """NOT_FOUND: an unknown id or name."""


class AlreadyExistsError(TunesmithClientError):
    """ALREADY_EXISTS: a name that is already taken."""


class FailedPreconditionError(TunesmithClientError):
    """FAILED_PRECONDITION: the object is in the wrong state for the request."""


class UnavailableError(TunesmithClientError):
    """UNAVAILABLE: the service, or something it depends on, cannot be reached (after retries)."""


class TunesmithConnectionError(UnavailableError):
    """Nothing answered at the service address (not started, wrong port, network down)."""


class DeadlineExceededError(TunesmithClientError):
    """DEADLINE_EXCEEDED: the call took longer than its timeout."""


class ResourceExhaustedError(TunesmithClientError):
    """RESOURCE_EXHAUSTED: out of memory or quota, or a message over the size limit."""


class UnimplementedError(TunesmithClientError):
    """UNIMPLEMENTED: an RPC or a field that is not built yet (`field` names it), or a client and
    server of different versions."""


class InternalError(TunesmithClientError):
    """INTERNAL or UNKNOWN: a bug in the service. `metadata["reference"]` finds the traceback in
    the service's log; no exception text is sent to clients."""


_BY_CODE: dict[grpc.StatusCode, type[TunesmithClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.UNKNOWN: InternalError,
}


def _status_details(err: grpc.RpcError) -> dict[str, Any]:
    """violations, reason, metadata and report from the error's google.rpc.Status details."""
    out: dict[str, Any] = {}
    try:
        from google.rpc import error_details_pb2
        from grpc_status import rpc_status

        status = rpc_status.from_call(err)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - details are a nicety; never mask the real error
        return out
    if status is None:
        return out
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out["violations"] = [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            out["reason"] = info.reason
            out["metadata"] = dict(info.metadata)
        else:
            from tunesmith.api.common.v1 import common_pb2

            if detail.Is(common_pb2.ValidationReport.DESCRIPTOR):
                report = common_pb2.ValidationReport()
                detail.Unpack(report)
                out["report"] = report
    if "violations" not in out and out.get("metadata", {}).get("field"):
        out["field"] = out["metadata"]["field"]
    return out


def from_rpc_error(err: grpc.RpcError, *, address: str | None = None) -> TunesmithClientError:
    """Return the SDK exception for `err` (does not raise it)."""
    code = err.code() if callable(getattr(err, "code", None)) else None
    details = err.details() if callable(getattr(err, "details", None)) else None
    details = details or (code.name if code is not None else str(err))
    if code == grpc.StatusCode.UNAVAILABLE and any(
        marker in details.lower() for marker in _CONNECTION_MARKERS
    ):
        where = address or "the service"
        return TunesmithConnectionError(
            f"cannot reach {where}: {CONNECT_HINT} ({details})",
            code=code,
            address=address,
            rpc_error=err,
        )
    cls = _BY_CODE.get(code, TunesmithClientError)  # type: ignore[arg-type]
    return cls(details, code=code, address=address, rpc_error=err, **_status_details(err))


F = TypeVar("F", bound=Callable[..., Any])


def _address_of(args: tuple) -> str | None:
    return getattr(args[0], "address", None) if args else None


def translate_errors(func: F) -> F:
    """Decorator: re-raise grpc.RpcError from `func` as a TunesmithClientError.

    Works for plain functions and generator functions (errors raised while iterating a
    server stream are translated too). The address is taken from `self.address` if present.
    """
    if inspect.isgeneratorfunction(func):

        @functools.wraps(func)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from func(*args, **kwargs)
            except grpc.RpcError as err:
                raise from_rpc_error(err, address=_address_of(args)) from None

        return gen_wrapper  # type: ignore[return-value]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except grpc.RpcError as err:
            raise from_rpc_error(err, address=_address_of(args)) from None

    return wrapper  # type: ignore[return-value]
