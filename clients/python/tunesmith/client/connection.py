"""Channels to the Tunesmith services: retries, keepalive, message sizes, readiness.

`connect(address)` returns a grpc.Channel (a `TunesmithChannel`, which also remembers its
address and default per-call timeout) whose service config retries UNAVAILABLE with
exponential backoff for every method of the four services. `wait_ready(channel, timeout)`
blocks until the channel is connected or raises TunesmithConnectionError.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc

from tunesmith.api.services import DEFAULT_PORTS, SERVICES
from tunesmith.client._version import __version__
from tunesmith.client.errors import CONNECT_HINT, TunesmithConnectionError

__all__ = [
    "SERVICES",
    "DEFAULT_PORTS",
    "DEFAULT_TIMEOUT",
    "MAX_MESSAGE_BYTES",
    "TunesmithChannel",
    "connect",
    "service_config",
    "channel_options",
    "wait_ready",
]

DEFAULT_TIMEOUT = 30.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# Retry backoff: attempt n waits random(0, min(INITIAL * MULTIPLIER**(n-1), MAX)) seconds.
INITIAL_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0
BACKOFF_MULTIPLIER = 2.0
# gRPC caps maxAttempts (first try + retries) at 5.
MAX_GRPC_ATTEMPTS = 5

# Keepalive pings only while a call is open, no more often than servers allow by default
# (grpc servers reject pings on an idle stream more often than every 5 minutes).
KEEPALIVE_TIME_MS = 6 * 60 * 1000
KEEPALIVE_TIMEOUT_MS = 20 * 1000


def service_config(retries: int = 4) -> dict[str, Any]:
    """The gRPC service config: retry UNAVAILABLE up to `retries` times (0 = never), for all
    methods of the four services. gRPC allows at most 4 retries (5 attempts); more is capped."""
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    method_config: dict[str, Any] = {"name": [{"service": name} for name in SERVICES.values()]}
    if retries > 0:
        method_config["retryPolicy"] = {
            "maxAttempts": min(retries + 1, MAX_GRPC_ATTEMPTS),
            "initialBackoff": f"{INITIAL_BACKOFF_S}s",
            "maxBackoff": f"{MAX_BACKOFF_S}s",
            "backoffMultiplier": BACKOFF_MULTIPLIER,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
    return {"methodConfig": [method_config]}


def channel_options(retries: int = 4) -> list[tuple[str, Any]]:
    """Channel options used by `connect`: service config, retries, keepalive, message sizes."""
    return [
        ("grpc.service_config", json.dumps(service_config(retries))),
        ("grpc.enable_retries", 1 if retries > 0 else 0),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.primary_user_agent", f"tunesmith-client/{__version__}"),
    ]


class TunesmithChannel(grpc.Channel):
    """A grpc.Channel that remembers its `address` and default per-call `timeout` (seconds).

    It delegates everything to the underlying channel (`.inner`), so generated stubs and any
    grpc API that takes a channel accept it.
    """

    def __init__(self, inner: grpc.Channel, address: str, timeout: float | None = DEFAULT_TIMEOUT):
        self.inner = inner
        self.address = address
        self.timeout = timeout

    def subscribe(self, callback, try_to_connect=False):  # noqa: D102
        return self.inner.subscribe(callback, try_to_connect=try_to_connect)

    def unsubscribe(self, callback):  # noqa: D102
        return self.inner.unsubscribe(callback)

    def unary_unary(self, method, *args, **kwargs):  # noqa: D102
        return self.inner.unary_unary(method, *args, **kwargs)

    def unary_stream(self, method, *args, **kwargs):  # noqa: D102
        return self.inner.unary_stream(method, *args, **kwargs)

    def stream_unary(self, method, *args, **kwargs):  # noqa: D102
        return self.inner.stream_unary(method, *args, **kwargs)

    def stream_stream(self, method, *args, **kwargs):  # noqa: D102
        return self.inner.stream_stream(method, *args, **kwargs)

    def close(self):  # noqa: D102
        return self.inner.close()

    def __enter__(self) -> TunesmithChannel:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def __repr__(self) -> str:
        return f"TunesmithChannel({self.address!r}, timeout={self.timeout})"


def connect(
    address: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = 4,
    tls: bool = False,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> TunesmithChannel:
    """Open a channel to one service at `address` ("host:port"). Connects lazily: nothing is
    contacted until the first call or `wait_ready`.

    - `timeout`: the default per-call deadline (seconds) that SDK clients built on this channel
      use for unary calls; streams have none unless one is passed per call.
    - `retries`: how often a call that fails with UNAVAILABLE is retried, with exponential
      backoff (0 = never; gRPC caps it at 4).
    - `tls`: use TLS with the system's root certificates; `credentials` overrides them.
    - `options`: extra grpc channel options; they override the defaults of the same name.
    """
    if not address or not isinstance(address, str):
        raise ValueError(f"address must be a non-empty 'host:port' string, got {address!r}")
    merged = dict(channel_options(retries))
    merged.update(dict(options))
    opts = list(merged.items())
    if tls or credentials is not None:
        inner = grpc.secure_channel(address, credentials or grpc.ssl_channel_credentials(), options=opts)
    else:
        inner = grpc.insecure_channel(address, options=opts)
    return TunesmithChannel(inner, address, timeout)


def wait_ready(channel: grpc.Channel, timeout: float = 10.0, *, address: str | None = None) -> None:
    """Block until `channel` is connected, or raise TunesmithConnectionError after `timeout`
    seconds. `address` names the target in the message (default: the channel's own)."""
    where = address or getattr(channel, "address", None) or "the service"
    future = grpc.channel_ready_future(channel)
    try:
        future.result(timeout=timeout)
    except grpc.FutureTimeoutError:
        future.cancel()
        raise TunesmithConnectionError(
            f"cannot reach {where} within {timeout:g}s: {CONNECT_HINT}", address=where
        ) from None
