"""The one gRPC server bootstrap shared by the four services.

Every server gets: gRPC health checking (overall and per service name), reflection, the
error-mapping interceptor (domain errors -> status codes, in one place), per-call logs, and
SIGTERM/SIGINT -> health NOT_SERVING -> graceful stop.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

# Short service name -> fully qualified gRPC name, and the standard ports: defined once, in the SDK.
from tunesmith.client.connection import DEFAULT_PORTS  # noqa: F401 - re-exported for the CLI
from tunesmith.client.connection import SERVICES as SERVICE_NAMES
from tunesmith.core import errors

log = logging.getLogger("tunesmith.server")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
FIELD_METADATA_KEY = "tunesmith-field"

_STATUS_BY_ERROR: list[tuple[type[errors.TunesmithError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.Unimplemented, grpc.StatusCode.UNIMPLEMENTED),
]


def status_code_for(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status code a raised exception maps to (INTERNAL for anything unexpected)."""
    for cls, code in _STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _abort(context: grpc.ServicerContext, method: str, exc: BaseException) -> None:
    code = status_code_for(exc)
    if isinstance(exc, errors.TunesmithError):
        message = str(exc)
        if exc.field:
            context.set_trailing_metadata(((FIELD_METADATA_KEY, exc.field),))
        log.info("rpc error", extra={"method": method, "code": code.name, "detail": message})
    else:
        message = f"internal error: {type(exc).__name__}: {exc}"
        log.exception("rpc failed", extra={"method": method})
    context.abort(code, message)


class ErrorMappingInterceptor(grpc.ServerInterceptor):
    """Turns domain errors raised by servicers into gRPC status codes, and logs each call."""

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails):
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method

        def wrap_unary(fn):
            def inner(request, context):
                start = time.perf_counter()
                try:
                    return fn(request, context)
                except Exception as exc:  # noqa: BLE001 - mapped in one place
                    if isinstance(exc, grpc.RpcError) or _is_abort(exc):
                        raise
                    _abort(context, method, exc)
                finally:
                    log.debug("rpc", extra={"method": method, "ms": round((time.perf_counter() - start) * 1e3, 1)})
            return inner

        def wrap_stream(fn):
            def inner(request, context):
                try:
                    yield from fn(request, context)
                except Exception as exc:  # noqa: BLE001
                    if isinstance(exc, grpc.RpcError) or _is_abort(exc):
                        raise
                    _abort(context, method, exc)
            return inner

        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                wrap_unary(handler.unary_unary), handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                wrap_stream(handler.unary_stream), handler.request_deserializer, handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                wrap_unary(handler.stream_unary), handler.request_deserializer, handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(
            wrap_stream(handler.stream_stream), handler.request_deserializer, handler.response_serializer)


def _is_abort(exc: BaseException) -> bool:
    # context.abort() raises a bare Exception after setting the status; let it through.
    return type(exc) is Exception and not exc.args


@dataclass
class RunningServer:
    """A started server. stop() flips health to NOT_SERVING, then stops with a grace period."""

    service: str
    port: int
    server: grpc.Server
    health: health.HealthServicer
    grace: float
    on_stop: Callable[[], None] | None = None

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"

    def stop(self, grace: float | None = None) -> None:
        self.health.enter_graceful_shutdown()
        self.server.stop(self.grace if grace is None else grace).wait()
        if self.on_stop:
            self.on_stop()

    def wait(self) -> None:
        self.server.wait_for_termination()


def start_server(service: str, servicer: Any, add_to_server: Callable[[Any, grpc.Server], None], *,
                 port: int = 0, host: str = "[::]", grace: float = 10.0, max_workers: int = 64,
                 on_stop: Callable[[], None] | None = None) -> RunningServer:
    """Start `servicer` as the `service` ("data", "trainer", ...) server on host:port (0 = any)."""
    full_name = SERVICE_NAMES[service]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"{service}-rpc"),
        interceptors=[ErrorMappingInterceptor()],
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    add_to_server(servicer, server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (full_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise errors.Unavailable(f"cannot listen on {host}:{port} for the {service} service (port in use?)", field="port")
    server.start()
    for name in ("", full_name):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving", extra={"grpc_service": full_name, "port": bound})
    return RunningServer(service, bound, server, health_servicer, grace, on_stop)


def serve_forever(running: RunningServer) -> None:
    """Block until SIGTERM/SIGINT, then shut down gracefully (NOT_SERVING first)."""
    done = threading.Event()

    def handle(signum, _frame):
        log.info("shutting down", extra={"signal": signal.Signals(signum).name})
        threading.Thread(target=lambda: (running.stop(), done.set()), daemon=True).start()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    done.wait()
