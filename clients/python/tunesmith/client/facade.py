"""`Tunesmith`: the four service clients in one object."""
from __future__ import annotations

import grpc

from tunesmith.client.connection import DEFAULT_PORTS
from tunesmith.client.data import DataClient
from tunesmith.client.evaluator import EvaluatorClient
from tunesmith.client.inference import InferenceClient
from tunesmith.client.models import ServiceStatus
from tunesmith.client.trainer import TrainerClient

__all__ = ["Tunesmith", "local_addresses"]


def local_addresses(host: str = "localhost") -> dict[str, str]:
    """The addresses `tunesmith up` serves on by default, on `host`."""
    return {name: f"{host}:{port}" for name, port in DEFAULT_PORTS.items()}


_LOCAL = local_addresses()


class Tunesmith:
    """All four clients: `.data`, `.trainer`, `.evaluator`, `.inference`.

    Each argument is an address ("host:port") or a grpc.Channel; the defaults are the local
    ports of `tunesmith up`. Nothing is contacted until the first call (or `wait_ready`).
    `timeout`, `retries` and `tls` apply to the clients built from addresses.

        with Tunesmith.local() as ts:
            ts.wait_ready()
            print(ts.trainer.status().plugins)
    """

    def __init__(
        self,
        data: str | grpc.Channel = _LOCAL["data"],
        trainer: str | grpc.Channel = _LOCAL["trainer"],
        evaluator: str | grpc.Channel = _LOCAL["evaluator"],
        inference: str | grpc.Channel = _LOCAL["inference"],
        *,
        timeout: float | None = None,
        retries: int = 4,
        tls: bool = False,
    ):
        common = {"timeout": timeout, "retries": retries, "tls": tls}
        self.data = DataClient(data, **common)
        self.trainer = TrainerClient(trainer, **common)
        self.evaluator = EvaluatorClient(evaluator, **common)
        self.inference = InferenceClient(inference, **common)

    @classmethod
    def local(cls, host: str = "localhost", **kwargs) -> Tunesmith:
        """Clients for the services `tunesmith up` starts on `host` (ports 50051-50054)."""
        return cls(**local_addresses(host), **kwargs)

    @property
    def clients(self) -> dict[str, DataClient | TrainerClient | EvaluatorClient | InferenceClient]:
        """The clients by service name."""
        return {"data": self.data, "trainer": self.trainer, "evaluator": self.evaluator, "inference": self.inference}

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until every service is reachable; TunesmithConnectionError names the first
        one that is not within `timeout` seconds (each)."""
        for client in self.clients.values():
            client.wait_ready(timeout)

    def status(self) -> dict[str, ServiceStatus]:
        """GetStatus of every service, by name (raises on the first unreachable one)."""
        return {name: client.status() for name, client in self.clients.items()}

    def close(self) -> None:
        """Close the channels the clients opened."""
        for client in self.clients.values():
            client.close()

    def __enter__(self) -> Tunesmith:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def __repr__(self) -> str:
        parts = ", ".join(f"{name}={client.address!r}" for name, client in self.clients.items())
        return f"Tunesmith({parts})"
