"""EvaluatorClient: evaluations (benchmarks, base-vs-tuned comparisons) and their events."""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Union

from tunesmith.api.common.v1 import common_pb2
from tunesmith.api.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc
from tunesmith.client._base import BaseClient, coerce
from tunesmith.client.errors import translate_errors

__all__ = ["EvaluatorClient"]

EvaluationSpecLike = Union[evaluator_pb2.EvaluationSpec, Mapping[str, Any]]


class EvaluatorClient(BaseClient):
    """Client of tunesmith.api.evaluator.v1.EvaluatorService (default address localhost:50053).

    Specs may be passed as `evaluator_pb2.EvaluationSpec` or as a dict in protobuf JSON form,
    e.g. {"dataset_id": "...", "benchmarks": ["accuracy"],
    "models": [{"label": "base", "model": "smollm2-135m-instruct"}]}.
    """

    SERVICE = "evaluator"
    _STUB = evaluator_pb2_grpc.EvaluatorServiceStub

    @translate_errors
    def create_evaluation(
        self,
        spec: EvaluationSpecLike,
        idempotency_key: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> evaluator_pb2.Evaluation:
        """Start an evaluation; returns at once, the evaluation runs as a job. Repeating a call
        with the same `idempotency_key` returns the existing evaluation."""
        request = evaluator_pb2.CreateEvaluationRequest(
            spec=coerce(spec, evaluator_pb2.EvaluationSpec, "spec"),
            idempotency_key=idempotency_key or "",
            labels=dict(labels or {}),
        )
        return self._stub.CreateEvaluation(request, timeout=self._deadline(timeout))

    @translate_errors
    def get_evaluation(self, evaluation_id: str, *, timeout: float | None = None) -> evaluator_pb2.Evaluation:
        """An evaluation by id (job state, spec, report once done); NotFoundError if none."""
        return self._stub.GetEvaluation(
            common_pb2.GetJobRequest(job_id=evaluation_id), timeout=self._deadline(timeout)
        )

    get = get_evaluation

    @translate_errors
    def list_evaluations(
        self,
        *,
        states: Iterable[int] = (),
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> evaluator_pb2.ListEvaluationsResponse:
        """One page of evaluations, optionally only those in `states` (common_pb2.JobState)."""
        request = common_pb2.ListJobsRequest(
            page=common_pb2.PageRequest(page_size=page_size, page_token=page_token),
            states=list(states),
        )
        return self._stub.ListEvaluations(request, timeout=self._deadline(timeout))

    @translate_errors
    def cancel_evaluation(self, evaluation_id: str, *, timeout: float | None = None) -> evaluator_pb2.Evaluation:
        """Ask an evaluation to stop; returns it after the request."""
        return self._stub.CancelEvaluation(
            common_pb2.CancelJobRequest(job_id=evaluation_id), timeout=self._deadline(timeout)
        )

    @translate_errors
    def events(
        self, evaluation_id: str, *, from_sequence: int = 0, follow: bool = True, timeout: float | None = None
    ) -> Iterator[common_pb2.JobEvent]:
        """The evaluation's events in order from `from_sequence`; with `follow`, until it ends.
        No deadline unless `timeout` is given. Closing the iterator cancels the stream."""
        yield from self._follow(self._stub.StreamEvaluationEvents, evaluation_id, from_sequence, follow, timeout)


    def wait(self, evaluation_id: str, *, timeout: float | None = None) -> evaluator_pb2.Evaluation:
        """Block until the evaluation ends and return it (DeadlineExceededError after `timeout`
        s). A failed evaluation is returned, not raised: check `.job.state` and `.job.error`."""
        return self._wait_job(self.get_evaluation, self.events, evaluation_id, timeout)
