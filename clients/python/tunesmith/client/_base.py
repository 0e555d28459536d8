"""Shared plumbing of the four service clients."""
from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from tunesmith.api.common.v1 import common_pb2
from tunesmith.client.connection import DEFAULT_TIMEOUT, connect, wait_ready
from tunesmith.client.errors import DeadlineExceededError, translate_errors
from tunesmith.client.models import TERMINAL_STATES, ServiceStatus

M = TypeVar("M", bound=Message)

# Timeout for calls that load models, validate whole files or generate text.
LONG_TIMEOUT = 600.0


def coerce(value: Any, cls: type[M], what: str) -> M:
    """`value` as a `cls` message: the message itself, a dict in protobuf JSON form (enum names
    as strings, e.g. {"schema": "SCHEMA_CHAT"}), or None for an empty message."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        from google.protobuf import json_format

        try:
            return json_format.ParseDict(dict(value), cls())
        except json_format.ParseError as err:
            raise ValueError(f"{what}: {err}") from None
    raise TypeError(f"{what} must be a {cls.__name__} message or a dict, got {type(value).__name__}")


class BaseClient:
    """A client of one service: holds the channel, default deadline and stub.

    `target` is an address ("host:port") or a grpc.Channel. Built from an address, the client
    owns its channel and `close()` closes it; a channel passed in is left to its owner.
    `timeout` is the default deadline (seconds) of unary calls (default: the channel's, or 30 s).
    """

    SERVICE = ""  # short name, e.g. "data"
    _STUB: Any = None

    def __init__(
        self,
        target: str | grpc.Channel,
        *,
        timeout: float | None = None,
        retries: int = 4,
        tls: bool = False,
    ):
        if isinstance(target, str):
            self.channel: grpc.Channel = connect(
                target, timeout=timeout if timeout is not None else DEFAULT_TIMEOUT, retries=retries, tls=tls
            )
            self._owns_channel = True
        elif isinstance(target, grpc.Channel):
            self.channel = target
            self._owns_channel = False
        else:
            raise TypeError(f"target must be an address or a grpc.Channel, got {type(target).__name__}")
        self.address: str = getattr(self.channel, "address", None) or f"the {self.SERVICE} service"
        if timeout is None:  # a TunesmithChannel carries its own default
            timeout = getattr(self.channel, "timeout", None)
        self.timeout: float = timeout if timeout is not None else DEFAULT_TIMEOUT
        self._stub = self._STUB(self.channel)

    # -- plumbing ----------------------------------------------------------------------------

    def _deadline(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    def close(self) -> None:
        """Close the channel if this client opened it."""
        if self._owns_channel:
            self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address!r})"

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the service is reachable; TunesmithConnectionError after `timeout` s."""
        wait_ready(self.channel, timeout, address=self.address)

    # -- shared RPCs -------------------------------------------------------------------------

    @translate_errors
    def status(self, *, timeout: float | None = None) -> ServiceStatus:
        """The service's name, version, loaded plugins, registered names and facts."""
        msg = self._stub.GetStatus(common_pb2.GetStatusRequest(), timeout=self._deadline(timeout))
        return ServiceStatus.from_proto(msg)

    def _follow(self, rpc: Any, job_id: str, from_sequence: int, follow: bool, timeout: float | None
                ) -> Iterator[common_pb2.JobEvent]:
        """Iterate a job-event stream; closing the iterator cancels the call."""
        request = common_pb2.JobEventsRequest(job_id=job_id, from_sequence=from_sequence, follow=follow)
        call = rpc(request, timeout=timeout)
        try:
            yield from call
        finally:
            call.cancel()

    def _wait_job(self, get: Any, events: Any, job_id: str, timeout: float | None) -> Any:
        """Follow `events(job_id, ...)` until the job ends, then return `get(job_id)` (a message
        whose `.job`, or itself, is a common Job). DeadlineExceededError after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        next_sequence = 0
        while True:
            current = get(job_id)
            job = current.job if hasattr(current, "job") else current
            if job.state in TERMINAL_STATES:
                return current
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise DeadlineExceededError(
                    f"job {job_id} still {common_pb2.JobState.Name(job.state)} after {timeout:g}s",
                    code=grpc.StatusCode.DEADLINE_EXCEEDED,
                    address=self.address,
                )
            received = 0
            try:
                for event in events(job_id, from_sequence=next_sequence, follow=True, timeout=remaining):
                    next_sequence = event.sequence + 1
                    received += 1
            except DeadlineExceededError:
                continue  # the loop re-checks the job and reports the timeout
            if not received:
                time.sleep(0.5)  # the stream ended early without news; do not spin
