"""A real inference service (gRPC + HTTP in one process) for the inference tests: start it on a
fresh storage root, register models, load one and wait until it is READY."""
from __future__ import annotations

import time
from contextlib import contextmanager


def wait_ready(stub, name: str, timeout: float = 60.0):
    """The ServedModel once it has left LOADING (READY or FAILED)."""
    from tunesmith.api.inference.v1 import inference_pb2

    deadline = time.monotonic() + timeout
    while True:
        served = stub.GetServedModel(inference_pb2.GetServedModelRequest(name=name))
        if served.state != inference_pb2.SERVED_MODEL_STATE_LOADING:
            return served
        assert time.monotonic() < deadline, f"{name} did not load in {timeout} s"
        time.sleep(0.05)


@contextmanager
def inference_service(root: str, models: dict[str, str], *, load: dict | None = None):
    """Yield {"runtime", "running", "stub", "servicer", "http"} for a service on `root` with
    `models` (name -> folder) registered; `load` (LoadModelRequest fields) is loaded and must
    end READY. Stops the service afterwards."""
    import grpc

    from tunesmith.api.inference.v1 import inference_pb2, inference_pb2_grpc
    from tunesmith.cli.servers import start_service
    from tunesmith.core.runtime import Runtime

    runtime = Runtime.create(root)
    for name, folder in models.items():
        runtime.models.register(name, folder)
    running = start_service("inference", runtime, port=0, host="127.0.0.1", http_port=0)
    channel = grpc.insecure_channel(running.address)
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    try:
        if load:
            stub.LoadModel(inference_pb2.LoadModelRequest(**load), timeout=60)
            served = wait_ready(stub, load["name"])
            assert served.state == inference_pb2.SERVED_MODEL_STATE_READY, served.error.message
        yield {"runtime": runtime, "running": running, "stub": stub, "servicer": running.servicer,
               "http": f"http://127.0.0.1:{running.http_port}"}
    finally:
        channel.close()
        running.stop(0)
