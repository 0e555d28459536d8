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
import uuid
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Callable

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from tunesmith.api.services import DEFAULT_PORTS  # noqa: F401 - re-exported for the CLI
from tunesmith.api.services import SERVICES as SERVICE_NAMES
from tunesmith.core import errors

log = logging.getLogger("tunesmith.server")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: How many rows of a refused data file's report travel in the error (counts cover them all).
MAX_REPORT_ISSUES = 100
#: An error travels in trailing metadata, which gRPC clients cap at 8 KiB by default (more and the
#: client sees RESOURCE_EXHAUSTED "Stream removed" instead of the error). Messages echo input
#: (ids, names, paths), so every text is cut, and the serialized google.rpc.Status (sent base64,
#: beside the percent-encoded message) keeps to a budget: violations and report issues that do
#: not fit are left out (the report's counts still cover them all).
MAX_ERROR_TEXT_BYTES = 512
MAX_STATUS_BYTES = 4096

_STATUS_BY_ERROR: list[tuple[type[errors.TunesmithError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unimplemented, grpc.StatusCode.UNIMPLEMENTED),
]


def status_code_for(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status code a raised exception maps to (INTERNAL for anything unexpected)."""
    for cls, code in _STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _pack(message) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


def clip(text: str, limit: int = MAX_ERROR_TEXT_BYTES) -> str:
    """`text` as valid UTF-8 of at most `limit` bytes (cut ones end in "...")."""
    raw = str(text).encode("utf-8", "replace")
    if len(raw) <= limit:
        return raw.decode("utf-8")
    return raw[:max(0, limit - 3)].decode("utf-8", "ignore") + "..."


def report_message(report: dict, *, budget: int | None = None):
    """A ValidationReport dict (tunesmith.data.prepare's shape) as the common proto, capped (at
    MAX_REPORT_ISSUES issues, and at `budget` serialized bytes when given: sent in an error)."""
    from tunesmith.api.common.v1 import common_pb2

    out = common_pb2.ValidationReport(
        source=str(report.get("source", "")), rows_read=int(report.get("rows_read", 0)),
        rows_accepted=int(report.get("rows_accepted", 0)), rows_rejected=int(report.get("rows_rejected", 0)),
        rows_filtered=int(report.get("rows_filtered", 0)), rows_deduplicated=int(report.get("rows_deduplicated", 0)),
        counts_by_code={str(k): int(v) for k, v in (report.get("counts_by_code") or {}).items()})
    if budget is not None:
        out.source = clip(out.source)
    for issue in list(report.get("issues") or [])[:MAX_REPORT_ISSUES]:
        item = common_pb2.RowIssue(row=int(issue.get("row", 0)), field=str(issue.get("field", "")),
                                   code=str(issue.get("code", "")), message=str(issue.get("message", "")))
        if budget is not None:
            item.field, item.code, item.message = clip(item.field, 256), clip(item.code, 64), clip(item.message)
            if out.ByteSize() + item.ByteSize() + 4 > budget:
                break
        out.issues.append(item)
    return out


def status_for(exc: BaseException, method: str = "") -> status_pb2.Status:
    """The google.rpc.Status a raised exception is sent as (see tunesmith.core.errors)."""
    code = status_code_for(exc)
    if not isinstance(exc, errors.TunesmithError):
        reference = uuid.uuid4().hex[:12]
        log.error("rpc failed (a bug)", exc_info=exc, extra={"method": method, "reference": reference})
        info = error_details_pb2.ErrorInfo(reason="INTERNAL", domain=errors.ERROR_DOMAIN,
                                           metadata={"reference": reference})
        return status_pb2.Status(code=code_pb2.INTERNAL, details=[_pack(info)],
                                 message=f"internal error (reference {reference}); the service log has the details")
    message = clip(str(exc))
    metadata = {clip(k, 64): clip(v, 256) for k, v in exc.metadata.items()}
    if exc.field:
        metadata.setdefault("field", clip(exc.field, 256))
    info = _pack(error_details_pb2.ErrorInfo(reason=clip(exc.reason, 64), domain=errors.ERROR_DOMAIN,
                                             metadata=metadata))
    budget = MAX_STATUS_BYTES - len(message.encode()) - info.ByteSize() - 16
    details = []
    if exc.violations and code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                                   grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED,
                                   grpc.StatusCode.ALREADY_EXISTS):
        bad = error_details_pb2.BadRequest()
        for v in exc.violations:  # the first ones, as many as fit (the message names the count)
            item = error_details_pb2.BadRequest.FieldViolation(field=clip(v.field, 256), description=clip(v.description))
            if bad.ByteSize() + item.ByteSize() + 4 > budget - 64:
                break
            bad.field_violations.append(item)
        details.append(_pack(bad))
        budget -= details[-1].ByteSize() + 4
    details.append(info)
    if isinstance(exc, errors.DataValidationError) and exc.report:
        details.append(_pack(report_message(exc.report, budget=max(0, budget - 64))))
    log.info("rpc error", extra={"method": method, "code": code.name, "detail": str(exc)})
    return status_pb2.Status(code=code.value[0], message=message, details=details)


def _abort(context: grpc.ServicerContext, method: str, exc: BaseException) -> None:
    context.abort_with_status(rpc_status.to_status(status_for(exc, method)))


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
    #: The inference service's HTTP API port, where it serves one (set by start_service).
    http_port: int | None = None
    #: The servicer object (set by start_service), for in-process callers and tests.
    servicer: Any = None

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
