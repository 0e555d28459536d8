"""The four services' fully qualified gRPC names and default ports: defined once, here, beside
the generated code, so the SDK and the services both read them without importing each other."""
from __future__ import annotations

# Fully qualified gRPC service names, by short name.
SERVICES: dict[str, str] = {
    "data": "tunesmith.api.data.v1.DataService",
    "trainer": "tunesmith.api.trainer.v1.TrainerService",
    "evaluator": "tunesmith.api.evaluator.v1.EvaluatorService",
    "inference": "tunesmith.api.inference.v1.InferenceService",
}

# The ports `tunesmith up` listens on (on localhost) by default.
DEFAULT_PORTS: dict[str, int] = {"data": 50051, "trainer": 50052, "evaluator": 50053, "inference": 50054}
