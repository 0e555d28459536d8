"""EvaluatorService: score models on held-out rows, compare them, store a report artifact.

Evaluations are jobs run on a thread of this service. Generation goes through an inference
backend plugin (default: transformers, batched), never one row at a time.
"""
from __future__ import annotations

import logging
import time

from tunesmith.api.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc
from tunesmith.core.contracts import Sampling
from tunesmith.core.jobs import JobControl, JobFailed, JobManager
from tunesmith.core.runtime import Runtime
from tunesmith.core.status import service_status
from tunesmith.evaluator.stats import bootstrap_metric_cis, mcnemar_p, paired_bootstrap_p, resamples_for
from tunesmith.evaluator.validation import DEFAULT_BACKEND, accept_evaluation_request

log = logging.getLogger("tunesmith.evaluator")


def longest_reference_tokens(model_path, references: list[str]) -> int:
    """Tokens the longest reference takes in the model's tokenizer, plus one for the stop token,
    so generation never cuts the longest label (at most 4096)."""
    from transformers import AutoTokenizer

    from tunesmith.core.tokens import encode_completions

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    longest = max((len(ids) for ids in encode_completions(tokenizer, [" " + r for r in references])), default=0)
    return max(1, min(4096, longest + 1))


class EvaluatorServicer(evaluator_pb2_grpc.EvaluatorServiceServicer):
    def __init__(self, runtime: Runtime):
        self.rt = runtime
        self.jobs = JobManager(runtime.storage, collection="evaluations", record_cls=evaluator_pb2.Evaluation,
                               kind="evaluation", noun="evaluation", validate=self._validate,
                               execute=self._execute, max_concurrent=1)

    # -- job stages ------------------------------------------------------------------------
    def _validate(self, record: evaluator_pb2.Evaluation, control: JobControl) -> None:
        # CreateEvaluation checked everything knowable; the models are resolved when loaded.
        control.log(f"evaluating {len(record.spec.models)} model(s) on {record.spec.dataset_id}/{record.spec.split}")

    def _execute(self, record: evaluator_pb2.Evaluation, control: JobControl) -> None:
        from tunesmith.core.formats.dataset import read_prepared

        spec = record.spec
        ds = self.rt.datasets.get(spec.dataset_id)
        rows = read_prepared(self.rt.storage, ds.artifact.uri).rows(spec.split)
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
        auto_length = not gen.max_new_tokens
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
            model_path = self.rt.models.local_path(m.model)
            if auto_length:
                sampling.max_new_tokens = longest_reference_tokens(model_path, references)
                control.log(f"max_new_tokens {sampling.max_new_tokens}: the longest reference in this model's "
                            "tokens, plus its end-of-answer token")
            loaded = backend.load(model_path)
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
                cis = bootstrap_metric_cis(_row_scorer(bench, texts, references), len(texts),
                                           resamples=resamples_for(len(texts)), seed=spec.generation.seed)
                for metric, value in result.metrics.items():
                    lo, hi = cis.get(metric, (value, value))
                    score.metrics.add(benchmark=bname, metric=metric, value=value, ci_low=lo, ci_high=hi)
                if result.per_row is not None:
                    per_row[m.label][bname] = list(result.per_row)
            control.metrics(f"scores:{m.label}", {f"{mv.benchmark}.{mv.metric}": mv.value for mv in score.metrics})

        self._compare(record, per_row, outputs, references, benchmarks)
        self._samples(record, rows, references, outputs, per_row)
        from tunesmith.core.formats.report import EvaluationReport, OutputRow, store_report
        from tunesmith.core.records import to_dict

        art = store_report(  # report.json + every row's outputs
            self.rt.storage,
            EvaluationReport(evaluation_id=record.job.id, report=to_dict(record.report), dataset_id=spec.dataset_id,
                             split=spec.split),
            (OutputRow(int(r.get("source_row") or i + 1), p, ref, {label: outs[i] for label, outs in outputs.items()})
             for i, (r, p, ref) in enumerate(zip(rows, prompts, references))))
        record.report_artifact.CopyFrom(control.output(art))
        control.save()

    def _compare(self, record, per_row: dict[str, dict[str, list[bool]]], outputs: dict[str, list[str]],
                 references: list[str], benchmarks: dict) -> None:
        """Each candidate against the baseline, per metric: McNemar's exact test for a metric
        that is the mean of the benchmark's per-row correctness (accuracy, exact match), a paired
        bootstrap test for any other (macro-F1, ...)."""
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
                base_rows = per_row.get(baseline, {}).get(mv.benchmark)
                cand_rows = per_row.get(s.label, {}).get(mv.benchmark)
                if base_rows is not None and cand_rows is not None and _is_row_mean(base_scores[key], base_rows) \
                        and _is_row_mean(mv.value, cand_rows):
                    p = mcnemar_p(base_rows, cand_rows)
                else:
                    bench = benchmarks[mv.benchmark]
                    p = paired_bootstrap_p(_row_scorer(bench, outputs[baseline], references),
                                           _row_scorer(bench, outputs[s.label], references), len(references),
                                           mv.metric, resamples=resamples_for(len(references)), seed=spec.generation.seed)
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
        spec = accept_evaluation_request(request, self.rt)
        return self.jobs.create(evaluator_pb2.Evaluation(spec=spec), request.idempotency_key, dict(request.labels))

    def GetEvaluation(self, request, context):
        return self.jobs.get(request.job_id)

    def ListEvaluations(self, request, context):
        items, token = self.jobs.list(list(request.states), request.page.page_size, request.page.page_token)
        return evaluator_pb2.ListEvaluationsResponse(evaluations=items, next_page_token=token)

    def CancelEvaluation(self, request, context):
        return self.jobs.cancel(request.job_id)

    def StreamEvaluationEvents(self, request, context):
        yield from self.jobs.events(request.job_id, request.from_sequence, request.follow, alive=context.is_active)


def _row_scorer(bench, predictions: list[str], references: list[str]):
    """score(row indices) -> the benchmark's metrics on those rows (for the bootstrap)."""
    return lambda idx: bench.score([predictions[i] for i in idx], [references[i] for i in idx]).metrics


def _is_row_mean(value: float, rows: list[bool]) -> bool:
    """Whether a metric is the mean of the per-row correctness (then McNemar applies)."""
    return bool(rows) and abs(value - sum(rows) / len(rows)) < 1e-9


def add_to_server(servicer, server) -> None:
    evaluator_pb2_grpc.add_EvaluatorServiceServicer_to_server(servicer, server)


__all__ = ["EvaluatorServicer", "add_to_server"]
