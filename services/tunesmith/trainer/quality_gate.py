"""A training job's quality gate (TrainingJobSpec.gate): after training, ask the evaluator
service, over gRPC, to compare base and tuned on the general-ability suites; record the
evaluation and whether the gate passed on the job's result. The trainer never imports the
evaluator: the evaluation is an ordinary CreateEvaluation any client could make."""
from __future__ import annotations

import time

from tunesmith.api.common.v1 import common_pb2
from tunesmith.api.evaluator.v1 import evaluator_pb2
from tunesmith.core.jobs import JobCancelled, JobControl, JobFailed

#: Validation rows the gate's evaluation also scores with exact match (for the report).
TASK_ROWS = 100
POLL_SECONDS = 1.0


def tuned_model(spec, result) -> evaluator_pb2.ModelUnderTest:
    """The trained model as the evaluator names it: merged model, full model, or base + adapter."""
    if result.merged_model.uri:
        return evaluator_pb2.ModelUnderTest(label="tuned", model=result.merged_model.uri)
    if result.model.uri:
        return evaluator_pb2.ModelUnderTest(label="tuned", model=result.model.uri)
    return evaluator_pb2.ModelUnderTest(label="tuned", model=spec.base_model, adapter=result.adapter)


def gate_spec(record) -> evaluator_pb2.EvaluationSpec:
    spec, g = record.spec, record.spec.gate
    return evaluator_pb2.EvaluationSpec(
        dataset_id=spec.dataset_id, split=spec.validation_split or spec.train_split, max_rows=TASK_ROWS,
        benchmarks=["exact_match"], baseline="base",
        models=[evaluator_pb2.ModelUnderTest(label="base", model=spec.base_model), tuned_model(spec, record.result)],
        gate=evaluator_pb2.RegressionGate(enabled=True, suites=list(g.suites), tolerance=g.tolerance, alpha=g.alpha,
                                          max_rows=g.max_rows))


def run_quality_gate(record, control: JobControl, evaluator_address: str) -> None:
    """Run the gate and fill result.gate_evaluation_id / gate_passed. JobFailed when the
    evaluation itself cannot run (the model is then not marked good); JobCancelled on cancel."""
    from tunesmith.client.errors import TunesmithClientError
    from tunesmith.client.evaluator import EvaluatorClient

    control.log(f"quality gate: evaluating base vs tuned on {', '.join(record.spec.gate.suites)} "
                f"with the evaluator at {evaluator_address}")
    try:
        with EvaluatorClient(evaluator_address) as client:
            ev = client.create_evaluation(gate_spec(record), idempotency_key=f"gate-{record.job.id}")
            record.result.gate_evaluation_id = ev.job.id
            control.save()
            while ev.job.state not in (common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED,
                                       common_pb2.JOB_STATE_CANCELLED):
                if control.cancelled.is_set():
                    client.cancel_evaluation(ev.job.id)
                    raise JobCancelled()
                time.sleep(POLL_SECONDS)
                ev = client.get_evaluation(ev.job.id)
    except TunesmithClientError as exc:
        raise JobFailed("quality_gate_unavailable", f"the quality gate could not run on the evaluator service: {exc}",
                        "spec.gate") from None
    if ev.job.state != common_pb2.JOB_STATE_SUCCEEDED:
        raise JobFailed("quality_gate_failed_to_run", f"the quality gate's evaluation {ev.job.id} ended "
                        f"{common_pb2.JobState.Name(ev.job.state)}: {ev.job.error.message}", "spec.gate")
    record.result.gate_passed = ev.report.gate.passed
    failed = [c for c in ev.report.gate.checks if not c.passed]
    if failed:
        control.log("quality gate FAILED: " + "; ".join(
            f"{c.suite} {c.metric} {c.baseline_value:.4g} -> {c.candidate_value:.4g} (p = {c.p_value:.2g})"
            for c in failed), "warning")
    else:
        control.log(f"quality gate passed (evaluation {ev.job.id})")
    control.save()
