"""Tunesmith Python SDK: typed clients of the four Tunesmith gRPC services.

Needs only grpcio and protobuf (no torch). Quick start:

    from tunesmith.client import Tunesmith

    ts = Tunesmith.local()              # the services `tunesmith up` starts (ports 50051-50054)
    ts.wait_ready(timeout=10)
    print(ts.trainer.status())

Every client method raises a TunesmithClientError subclass, never a raw grpc.RpcError.
"""
from tunesmith.client._version import __version__
from tunesmith.client.connection import DEFAULT_PORTS, SERVICES, TunesmithChannel, connect, wait_ready
from tunesmith.client.data import DataClient
from tunesmith.client.errors import (
    AlreadyExistsError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    TunesmithClientError,
    TunesmithConnectionError,
    UnavailableError,
    UnimplementedError,
)
from tunesmith.client.evaluator import EvaluatorClient
from tunesmith.client.facade import Tunesmith, local_addresses
from tunesmith.client.inference import InferenceClient
from tunesmith.client.models import PluginInfo, ServiceStatus
from tunesmith.client.trainer import TrainerClient

__all__ = [
    "__version__",
    # connection
    "connect",
    "wait_ready",
    "TunesmithChannel",
    "DEFAULT_PORTS",
    "SERVICES",
    "local_addresses",
    # clients
    "Tunesmith",
    "DataClient",
    "TrainerClient",
    "EvaluatorClient",
    "InferenceClient",
    # results
    "ServiceStatus",
    "PluginInfo",
    # errors
    "TunesmithClientError",
    "TunesmithConnectionError",
    "InvalidArgumentError",
    "NotFoundError",
    "AlreadyExistsError",
    "FailedPreconditionError",
    "UnavailableError",
    "DeadlineExceededError",
    "ResourceExhaustedError",
    "UnimplementedError",
    "InternalError",
]
