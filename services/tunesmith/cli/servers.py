"""Start the four services: one per process (`tunesmith serve`) or all on localhost (`tunesmith up`)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Callable

from tunesmith.core.server import DEFAULT_PORTS, SERVICE_NAMES, RunningServer, start_server

SERVICES = tuple(SERVICE_NAMES)


def build_servicer(service: str, runtime) -> tuple[object, Callable]:
    """The servicer object and its add-to-server function for a short service name."""
    if service == "data":
        from tunesmith.data.service import DataServicer, add_to_server

        return DataServicer(runtime), add_to_server
    if service == "trainer":
        from tunesmith.trainer.service import TrainerServicer, add_to_server

        return TrainerServicer(runtime), add_to_server
    if service == "evaluator":
        from tunesmith.evaluator.service import EvaluatorServicer, add_to_server

        return EvaluatorServicer(runtime), add_to_server
    if service == "inference":
        from tunesmith.inference.service import InferenceServicer, add_to_server

        return InferenceServicer(runtime), add_to_server
    raise ValueError(f"unknown service {service!r}; choose from {', '.join(SERVICES)}")


def start_service(service: str, runtime, *, port: int = 0, host: str = "[::]", grace: float = 10.0,
                  http_port: int | None = None) -> RunningServer:
    """Start one service in this process (tests use this with port 0). For the inference
    service, http_port (0: any free port; None: off) also serves the OpenAI-compatible HTTP API
    on the same servicer; RunningServer.http_port says where."""
    servicer, add = build_servicer(service, runtime)
    http = None
    if service == "inference" and http_port is not None:
        from tunesmith.inference.http_api import HttpServer

        http = HttpServer(servicer, host="127.0.0.1" if host in ("127.0.0.1", "localhost") else "0.0.0.0",
                          port=http_port).start()
    close = getattr(servicer, "close", None)

    def on_stop() -> None:
        if http is not None:
            http.stop()
        if close:
            close()

    # The inference service admits max_queue generation calls; its pool has room beyond them for
    # health checks and for refusing one more with RESOURCE_EXHAUSTED.
    workers = {"max_workers": servicer.max_queue + 16} if hasattr(servicer, "max_queue") else {}
    running = start_server(service, servicer, add, port=port, host=host, grace=grace, on_stop=on_stop, **workers)
    running.http_port = http.port if http is not None else None
    running.servicer = servicer
    return running


def wait_healthy(address: str, service: str, timeout: float) -> bool:
    """True once the gRPC health check of `service` at `address` says SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                resp = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAMES[service]), timeout=1.0)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    return False


class LocalCluster:
    """The four services as child processes on localhost (the embedded default)."""

    def __init__(self, *, ports: dict[str, int] | None = None, storage: str | None = None, log_dir: str | None = None,
                 http_port: int | None = None, load: list[str] | None = None, load_backend: str = "",
                 enable_adapters: bool = False):
        """http_port: the inference service's OpenAI-compatible HTTP API (default 8000 with the
        default ports, else the inference port + 1000). load: NAME=MODEL specs the inference
        service starts loading at once (`tunesmith serve inference --load`), with load_backend
        and enable_adapters."""
        self.load = list(load or [])
        self.load_args = (["--load-backend", load_backend] if load_backend else []) + (
            ["--enable-adapters"] if enable_adapters else [])
        from tunesmith.inference.http_api import DEFAULT_HTTP_PORT

        self.ports = dict(ports or DEFAULT_PORTS)
        self.http_port = http_port if http_port is not None else (
            DEFAULT_HTTP_PORT if ports is None else self.ports["inference"] + 1000)
        self.storage = storage
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self._logs: list = []

    @property
    def addresses(self) -> dict[str, str]:
        return {s: f"localhost:{p}" for s, p in self.ports.items()}

    def start(self, timeout: float = 120.0) -> "LocalCluster":
        env = dict(os.environ)
        if self.storage:
            env["TUNESMITH_HOME"] = self.storage
        for service, address in self.addresses.items():  # each service can call the others (Runtime.peers)
            env[f"TUNESMITH_{service.upper()}_ADDRESS"] = address
        for service, port in self.ports.items():
            out = open(os.path.join(self.log_dir, f"{service}.log"), "ab") if self.log_dir else subprocess.DEVNULL
            if self.log_dir:
                self._logs.append(out)
            # The embedded default listens on loopback only: there is no authentication yet.
            http = ["--http-port", str(self.http_port), *(a for spec in self.load for a in ("--load", spec)),
                    *self.load_args] if service == "inference" else []
            self.procs[service] = subprocess.Popen(
                [sys.executable, "-m", "tunesmith.cli.main", "serve", service, "--port", str(port),
                 "--host", "127.0.0.1", *http],
                env=env, stdout=out, stderr=out if self.log_dir else None)
        for service in self.ports:
            if not wait_healthy(self.addresses[service], service, timeout):
                code = self.procs[service].poll()
                self.stop()
                raise RuntimeError(f"the {service} service did not become healthy on port {self.ports[service]}"
                                   + (f" (exited with code {code})" if code is not None else ""))
        return self

    def stop(self, grace: float = 15.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()
        for f in self._logs:
            f.close()
        self._logs.clear()

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
