"""SDK exceptions, and the translation of grpc.RpcError into them.

Every client method goes through `translate_errors`, so callers only ever see
`TunesmithClientError` subclasses, never a raw `grpc.RpcError`. The original error stays
available as `err.rpc_error`.

The services send details as "field: message" when one input is at fault (see
tunesmith.core.errors), and the field alone in the "tunesmith-field" trailing metadata. The
field goes into `err.field` (from the metadata, else parsed from the details) and the rest into
`err.message`. `str(err)` is always the full detail text.
"""
from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterator
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
    "CONNECT_HINT",
    "FIELD_METADATA_KEY",
    "from_rpc_error",
    "translate_errors",
]

CONNECT_HINT = "is the service running? try `tunesmith up`"

# Trailing metadata key naming the offending field (set by tunesmith.core.server).
FIELD_METADATA_KEY = "tunesmith-field"

# "field: message", where field is a dotted path with optional indexes: "spec.method.rank",
# "rows[3].input". A leading phrase with spaces never matches.
_FIELD_RE = re.compile(
    r"^(?P<field>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[\d+\])*): (?P<message>.+)$", re.DOTALL
)

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


class TunesmithClientError(Exception):
    """Base class of every SDK error.

    Attributes: `code` (grpc.StatusCode or None), `details` (full detail text), `field` (the
    offending input, or None), `message` (details without the "field: " prefix), `address`
    (the service address where known), `rpc_error` (the original grpc.RpcError, or None).
    """

    def __init__(
        self,
        details: str,
        *,
        code: grpc.StatusCode | None = None,
        address: str | None = None,
        rpc_error: grpc.RpcError | None = None,
        field: str | None = None,
    ):
        super().__init__(details)
        self.details = details
        self.code = code
        self.address = address
        self.rpc_error = rpc_error
        match = _FIELD_RE.match(details or "")
        if field:
            self.field: str | None = field
            prefix = f"{field}: "
            self.message: str = details[len(prefix):] if details.startswith(prefix) else details
        else:
            self.field = match.group("field") if match else None
            self.message = match.group("message") if match else (details or "")

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
    """UNIMPLEMENTED: the service does not offer this RPC (client and server versions differ?)."""


class InternalError(TunesmithClientError):
    """INTERNAL or UNKNOWN: a bug or crash in the service; its logs have the traceback."""


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


def _field_from_metadata(err: grpc.RpcError) -> str | None:
    getter = getattr(err, "trailing_metadata", None)
    try:
        metadata = getter() if callable(getter) else None
    except Exception:  # noqa: BLE001 - metadata is a nicety; never mask the real error
        return None
    for key, value in metadata or ():
        if key == FIELD_METADATA_KEY and value:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


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
    return cls(details, code=code, address=address, rpc_error=err, field=_field_from_metadata(err))


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
