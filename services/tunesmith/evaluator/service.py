"""EvaluatorService: score models on held-out rows, compare them, store a report artifact.

Evaluations are jobs run on a thread of this service. Generation goes through an inference
backend plugin (default: transformers, batched), never one row at a time.
"""
from __future__ import annotations

import json
import logging
import time

from tunesmith.api.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc
from tunesmith.core.contracts import Sampling
from tunesmith.core.errors import InvalidArgument, NotFound
from tunesmith.core.jobs import JobControl, JobFailed, JobManager
from tunesmith.core.runtime import Runtime
from tunesmith.core.status import service_status
from tunesmith.evaluator.stats import bootstrap_ci, mcnemar_p

log = logging.getLogger("tunesmith.evaluator")
DEFAULT_BACKEND = "transformers"


class EvaluatorServicer(evaluator_pb2_grpc.EvaluatorServiceServicer):
    def __init__(self, runtime: Runtime):
        self.rt = runtime
        self.jobs = JobManager(runtime.storage, collection="evaluations", record_cls=evaluator_pb2.Evaluation,
                               kind="evaluation", noun="evaluation", validate=self._validate,
                               execute=self._execute, max_concurrent=1)

    # -- job stages ------------------------------------------------------------------------
    def _validate(self, record: evaluator_pb2.Evaluation, control: JobControl) -> None:
        spec = record.spec
        ds = self.rt.datasets.get(spec.dataset_id, field="spec.dataset_id")
        if spec.split not in {s.name for s in ds.splits}:
            raise JobFailed("invalid_split", f"dataset {ds.id} has no split {spec.split!r}", "spec.split")
        for i, m in enumerate(spec.models):
            try:
                self.rt.models.local_path(m.model)
            except NotFound as exc:
                raise JobFailed("unknown_model", exc.message, f"spec.models[{i}].model") from None
            if m.adapter.uri:
                raise JobFailed("unsupported", "evaluating an adapter on top of a model is not supported yet; "
                                "evaluate the merged model", f"spec.models[{i}].adapter")

    def _execute(self, record: evaluator_pb2.Evaluation, control: JobControl) -> None:
        from tunesmith.data.prepare import read_split

        spec = record.spec
        ds = self.rt.datasets.get(spec.dataset_id)
        rows = read_split(self.rt.storage.local_path(ds.artifact.uri), spec.split)
        if spec.max_rows:
            rows = rows[: spec.max_rows]
        if not rows:
            raise JobFailed("empty_dataset", f"split {spec.split!r} of {ds.id} has no rows", "spec.split")
        prompts = [r["prompt"] for r in rows]
        references = [r["completion"].strip() for r in rows]
        backend = self.rt.registry.get("inference_backends", spec.backend)
        ok, reason = backend.available()
        if not ok:
            raise JobFailed("backend_unavailable", f"inference backend {spec.backend!r} is not usable here: {reason}",
                            "spec.backend")
        gen = spec.generation
        sampling = Sampling(max_new_tokens=gen.max_new_tokens or 16, temperature=gen.temperature,
                            top_p=gen.top_p or 1.0, stop=list(gen.stop) or ["\n"], seed=gen.seed)
        batch = gen.batch_size or 32
        benchmarks = {name: self.rt.registry.get("benchmarks", name) for name in spec.benchmarks}
        outputs: dict[str, list[str]] = {}
        per_row: dict[str, dict[str, list[bool]]] = {}
        report = record.report
        report.rows = len(rows)
        total_steps = len(spec.models) * len(rows)
        done = 0
        for m in spec.models:
            control.log(f"loading {m.label} ({m.model}) with {spec.backend}")
            loaded = backend.load(self.rt.models.local_path(m.model))
            try:
                texts: list[str] = []
                start = time.perf_counter()
                completion_tokens = 0
                for i in range(0, len(prompts), batch):
                    control.check_cancelled()
                    results = loaded.generate(prompts[i:i + batch], sampling)
                    texts.extend(g.text for g in results)
                    completion_tokens += sum(g.completion_tokens for g in results)
                    done += len(results)
                    elapsed = time.perf_counter() - start
                    control.progress(phase=f"generate:{m.label}", step=done, total_steps=total_steps,
                                     elapsed_seconds=elapsed, tokens_per_second=completion_tokens / max(elapsed, 1e-9))
                seconds = time.perf_counter() - start
            finally:
                loaded.close()
            outputs[m.label] = texts
            score = report.scores.add(label=m.label, model=m.model, generate_seconds=seconds,
                                      tokens_per_second=completion_tokens / max(seconds, 1e-9))
            per_row[m.label] = {}
            for bname, bench in benchmarks.items():
                result = bench.score(texts, references)
                for metric, value in result.metrics.items():
                    lo, hi = bootstrap_ci(result.per_row, seed=spec.generation.seed) if result.per_row else (value, value)
                    score.metrics.add(benchmark=bname, metric=metric, value=value, ci_low=lo, ci_high=hi)
                if result.per_row is not None:
                    per_row[m.label][bname] = list(result.per_row)
            control.metrics(f"scores:{m.label}", {f"{mv.benchmark}.{mv.metric}": mv.value for mv in score.metrics})

        self._compare(record, per_row)
        self._samples(record, rows, references, outputs, per_row)
        with self.rt.storage.staging_dir() as tmp:
            from tunesmith.core.records import to_dict

            (tmp / "report.json").write_text(json.dumps(to_dict(record.report), indent=2))
            (tmp / "outputs.jsonl").write_text("".join(
                json.dumps({"row": r.get("source_row"), "prompt": p, "reference": ref,
                            **{label: outs[i] for label, outs in outputs.items()}}) + "\n"
                for i, (r, p, ref) in enumerate(zip(rows, prompts, references))))
            art = self.rt.storage.put_artifact("report", tmp)  # report.json + every row's outputs
        record.report_artifact.CopyFrom(control.output(art))
        control.save()

    def _compare(self, record, per_row: dict[str, dict[str, list[bool]]]) -> None:
        spec, report = record.spec, record.report
        baseline = spec.baseline or (spec.models[0].label if spec.models else "")
        gate = True
        base_scores = {(mv.benchmark, mv.metric): mv.value for s in report.scores if s.label == baseline for mv in s.metrics}
        for s in report.scores:
            if s.label == baseline:
                continue
            for mv in s.metrics:
                key = (mv.benchmark, mv.metric)
                if key not in base_scores:
                    continue
                delta = mv.value - base_scores[key]
                p = 1.0
                if mv.benchmark in per_row.get(baseline, {}) and mv.benchmark in per_row.get(s.label, {}):
                    p = mcnemar_p(per_row[baseline][mv.benchmark], per_row[s.label][mv.benchmark])
                report.comparisons.add(baseline=baseline, candidate=s.label, metric=f"{mv.benchmark}.{mv.metric}",
                                       delta=delta, p_value=p, significant=p < 0.05)
                if spec.regression_tolerance and delta < -spec.regression_tolerance:
                    gate = False
        report.regression_gate_passed = gate

    def _samples(self, record, rows, references, outputs, per_row) -> None:
        keep = record.spec.keep_samples or 20
        first_bench = record.spec.benchmarks[0] if record.spec.benchmarks else ""
        for i in range(min(keep, len(rows))):
            sample = record.report.samples.add(row=rows[i].get("source_row", i), prompt=rows[i]["prompt"],
                                               reference=references[i])
            for label, outs in outputs.items():
                sample.outputs[label] = outs[i]
                if first_bench in per_row.get(label, {}):
                    sample.correct[label] = per_row[label][first_bench][i]

    # -- RPCs ------------------------------------------------------------------------------
    def GetStatus(self, request, context):
        return service_status("evaluator", self.rt.registry, {"storage": self.rt.storage.root_uri,
                                                              "default_backend": DEFAULT_BACKEND})

    def CreateEvaluation(self, request, context):
        spec = evaluator_pb2.EvaluationSpec()
        spec.CopyFrom(request.spec)
        if not spec.dataset_id:
            raise InvalidArgument("dataset_id is required", field="spec.dataset_id")
        self.rt.datasets.get(spec.dataset_id, field="spec.dataset_id")
        if not spec.models:
            raise InvalidArgument("at least one model is required", field="spec.models")
        labels = [m.label for m in spec.models]
        for i, m in enumerate(spec.models):
            if not m.label or not m.model:
                raise InvalidArgument("each model needs a label and a model", field=f"spec.models[{i}]")
        if len(set(labels)) != len(labels):
            raise InvalidArgument(f"model labels must be unique (got {labels})", field="spec.models")
        if not spec.benchmarks:
            spec.benchmarks.append("exact_match")
        for i, b in enumerate(spec.benchmarks):
            self.rt.registry.require("benchmarks", b, f"spec.benchmarks[{i}]")
        spec.backend = spec.backend or DEFAULT_BACKEND
        self.rt.registry.require("inference_backends", spec.backend, "spec.backend")
        spec.split = spec.split or "validation"
        if spec.baseline and spec.baseline not in labels:
            raise InvalidArgument(f"baseline {spec.baseline!r} is not one of the model labels {labels}", field="spec.baseline")
        return self.jobs.create(evaluator_pb2.Evaluation(spec=spec), request.idempotency_key, dict(request.labels))

    def GetEvaluation(self, request, context):
        return self.jobs.get(request.job_id)

    def ListEvaluations(self, request, context):
        items, token = self.jobs.list(list(request.states), request.page.page_size, request.page.page_token)
        return evaluator_pb2.ListEvaluationsResponse(evaluations=items, next_page_token=token)

    def CancelEvaluation(self, request, context):
        return self.jobs.cancel(request.job_id)

    def WatchEvaluation(self, request, context):
        yield from self.jobs.events(request.job_id, request.from_sequence, request.follow, alive=context.is_active)


def add_to_server(servicer, server) -> None:
    evaluator_pb2_grpc.add_EvaluatorServiceServicer_to_server(servicer, server)


__all__ = ["EvaluatorServicer", "add_to_server"]
