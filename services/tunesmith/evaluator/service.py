"""EvaluatorService: score models on held-out rows, compare them, gate, judge, analyse, report.

Evaluations are jobs run on a thread of this service. An evaluation:
1. builds EvalRows from the dataset split (evaluator/rows.py);
2. runs every model under test through the inference backend plugin (evaluator/runner.py):
   answers for generation benchmarks, error analysis and judging; log-likelihoods for
   log-likelihood benchmarks; and the regression gate's general-ability suites;
3. scores each benchmark with its own interval and paired test (evaluator/scoring.py);
4. gates (evaluator/gate.py), counts mistakes (evaluator/errors.py), judges pairwise with
   Bradley-Terry ratings (evaluator/judging.py, evaluator/elo.py), updates a leaderboard;
5. stores the report artifact (JSON + every row's outputs) and, when asked, the HTML report.
"""
from __future__ import annotations

import logging
from typing import Any

from tunesmith.api.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc
from tunesmith.core.contracts import Sampling
from tunesmith.core.jobs import JobControl, JobFailed, JobManager
from tunesmith.core.runtime import Runtime
from tunesmith.core.status import service_status
from tunesmith.evaluator.validation import (
    DEFAULT_BACKEND,
    accept_evaluation_request,
    benchmark_options,
)

log = logging.getLogger("tunesmith.evaluator")


def longest_reference_tokens(model_path, references: list[str]) -> int:
    """Tokens the longest reference takes in the model's tokenizer, plus one for the stop token,
    so generation never cuts the longest label (at most 4096)."""
    from transformers import AutoTokenizer
    from tunesmith.core.tokens import encode_completions

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    longest = max((len(ids) for ids in encode_completions(tokenizer, [" " + r for r in references])), default=0)
    return max(1, min(4096, longest + 1))


class _ModelOutputs:
    """What one model produced: answers (EvalRows with predictions) and, per log-likelihood
    benchmark or suite, EvalRows with log-likelihoods."""

    def __init__(self):
        self.answered: list | None = None
        self.scored_rows: dict[str, list] = {}  # benchmark name or "suite:<name>" -> rows
        self.generate_seconds = 0.0
        self.tokens_per_second = 0.0


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
        from tunesmith.evaluator.rows import eval_rows

        spec = record.spec
        ds = self.rt.datasets.get(spec.dataset_id)
        prepared = read_prepared(self.rt.storage, ds.artifact.uri).rows(spec.split)
        if spec.max_rows:
            prepared = prepared[: spec.max_rows]
        if not prepared:
            raise JobFailed("empty_dataset", f"split {spec.split!r} of {ds.id} has no rows", "spec.split")
        rows = eval_rows(prepared, ds.labels)
        backend = self.rt.registry.get("inference_backends", spec.backend)
        ok, reason = backend.available()
        if not ok:
            raise JobFailed("backend_unavailable", f"inference backend {spec.backend!r} is not usable here: {reason}",
                            "spec.backend")
        options = benchmark_options(spec)
        benchmarks = {name: self.rt.registry.get("benchmarks", name) for name in spec.benchmarks}
        suites = self._suites(spec)
        outputs = {m.label: self._run_model(control, spec, m, backend, rows, benchmarks, options, suites)
                   for m in spec.models}
        report = record.report
        report.rows = len(rows)
        scores = self._score(record, rows, outputs, benchmarks, options, suites)
        self._compare_and_gate(record, scores, benchmarks, options, suites)
        answered = {label: out.answered for label, out in outputs.items() if out.answered is not None}
        analyses = self._error_analysis(record, answered, prepared) if spec.error_analysis and answered else {}
        if spec.HasField("judge") and answered:
            self._judge(record, control, rows, answered)
        self._samples(record, prepared, rows, answered, scores)
        control.save()
        self._store(record, control, prepared, rows, answered, analyses)

    # -- running the models ------------------------------------------------------------------
    def _suites(self, spec) -> dict[str, Any]:
        if not spec.gate.enabled:
            return {}
        import dataclasses

        from tunesmith.evaluator.suites import load_suite

        out = {}
        for name in spec.gate.suites:
            suite = load_suite(name)
            if spec.gate.max_rows:
                suite = dataclasses.replace(suite, rows=tuple(suite.rows[: spec.gate.max_rows]))
            out[name] = suite
        return out

    def _run_model(self, control: JobControl, spec, m, backend, rows, benchmarks, options, suites) -> _ModelOutputs:
        from tunesmith.evaluator.rows import with_answers, with_loglikelihoods
        from tunesmith.evaluator.runner import ModelRun

        out = _ModelOutputs()
        needs_answers = (any(b.needs == "generation" for b in benchmarks.values()) or spec.error_analysis
                         or spec.HasField("judge"))
        what = f"{m.label} ({m.model}" + (f" + adapter {m.adapter.uri}" if m.adapter.uri else "") + ")"
        control.log(f"loading {what} with {spec.backend}")
        with ModelRun(self.rt, backend, m) as run:
            if needs_answers:
                sampling = self._sampling(control, spec, run.model_path, rows)
                done = [0]

                def on_batch(n: int, seconds: float, tokens: int, _done=done) -> None:
                    _done[0] += n
                    control.progress(phase=f"generate:{m.label}", step=_done[0], total_steps=len(rows),
                                     elapsed_seconds=seconds)

                generations, seconds = run.generate([r.prompt for r in rows], sampling,
                                                    batch=spec.generation.batch_size or 32, on_batch=on_batch,
                                                    check=control.check_cancelled)
                out.answered = with_answers(rows, generations, sampling.max_new_tokens)
                out.generate_seconds = seconds
                out.tokens_per_second = sum(g.completion_tokens for g in generations) / max(seconds, 1e-9)
            jobs = [(name, b, rows, options.get(name, {})) for name, b in benchmarks.items() if b.needs == "loglikelihood"]
            for sname, suite in suites.items():
                jobs.append((f"suite:{sname}", self.rt.registry.get("benchmarks", suite.benchmark), list(suite.rows), {}))
            for key, bench, base_rows, opts in jobs:
                requests = [bench.requests(r, opts) for r in base_rows]
                flat = [q for reqs in requests for q in reqs]
                control.progress(phase=f"loglikelihood:{m.label}:{key}", step=0, total_steps=len(flat))
                results = run.loglikelihood(flat, check=control.check_cancelled)
                out.scored_rows[key] = with_loglikelihoods(base_rows, requests, results)
        return out

    def _sampling(self, control: JobControl, spec, model_path, rows) -> Sampling:
        gen = spec.generation
        sampling = Sampling(max_new_tokens=gen.max_new_tokens or 16, temperature=gen.temperature,
                            top_p=gen.top_p or 1.0, stop=list(gen.stop) or ["\n"], seed=gen.seed)
        if not gen.max_new_tokens:
            sampling.max_new_tokens = longest_reference_tokens(model_path, [r.reference for r in rows])
            control.log(f"max_new_tokens {sampling.max_new_tokens}: the longest reference in this model's "
                        "tokens, plus its end-of-answer token")
        return sampling

    # -- scoring -----------------------------------------------------------------------------
    def _score(self, record, rows, outputs, benchmarks, options, suites) -> dict[str, dict[str, Any]]:
        """{label: {benchmark or "suite:<name>": scoring.BenchmarkScore}}; fills report.scores and
        gate.suite_scores."""
        from tunesmith.evaluator.scoring import score_benchmark

        seed = record.spec.generation.seed
        scores: dict[str, dict[str, Any]] = {}
        report = record.report
        for m in record.spec.models:
            out = outputs[m.label]
            scores[m.label] = {}
            score = report.scores.add(label=m.label, model=m.model, generate_seconds=out.generate_seconds,
                                      tokens_per_second=out.tokens_per_second)
            suite_score = None
            for key, bench, opts in ([(n, b, options.get(n, {})) for n, b in benchmarks.items()]
                                     + [(f"suite:{s}", self.rt.registry.get("benchmarks", suite.benchmark), {})
                                        for s, suite in suites.items()]):
                scored = out.answered if bench.needs == "generation" else out.scored_rows[key]
                result = score_benchmark(bench, scored, opts, seed=seed)
                scores[m.label][key] = result
                if key.startswith("suite:"):
                    if suite_score is None:
                        suite_score = report.gate.suite_scores.add(label=m.label, model=m.model)
                    target, bench_name = suite_score, key
                else:
                    target, bench_name = score, key
                for mr in result.metrics:
                    target.metrics.add(benchmark=bench_name, metric=mr.metric, value=mr.value, ci_low=mr.ci_low,
                                       ci_high=mr.ci_high, statistic=mr.statistic, higher_is_better=mr.higher_is_better)
        return scores

    def _compare_and_gate(self, record, scores, benchmarks, options, suites) -> None:
        """Each candidate against the baseline, per metric, with the benchmark's own paired test;
        then the task gate (regression_tolerance) and the suites' gate."""
        from tunesmith.evaluator.gate import TASK_ALPHA, all_passed, gate_check
        from tunesmith.evaluator.scoring import compare_scores

        spec, report = record.spec, record.report
        baseline = spec.baseline or spec.models[0].label
        seed = spec.generation.seed
        gate = report.gate
        gate.tolerance, gate.alpha = spec.gate.tolerance, spec.gate.alpha
        for m in spec.models:
            if m.label == baseline:
                continue
            for key, base_score in scores[baseline].items():
                suite = key.removeprefix("suite:") if key.startswith("suite:") else ""
                bench = self.rt.registry.get("benchmarks", suites[suite].benchmark) if suite else benchmarks[key]
                cand_score = scores[m.label][key]
                comparisons = compare_scores(bench, base_score, cand_score, {} if suite else options.get(key, {}),
                                             seed=seed)
                values = {(mr.metric): mr.value for mr in base_score.metrics}
                cand_values = {(mr.metric): mr.value for mr in cand_score.metrics}
                for c in comparisons:
                    if not suite:
                        report.comparisons.add(baseline=baseline, candidate=m.label, metric=f"{key}.{c.metric}",
                                               delta=c.delta, p_value=c.p_value, significant=c.p_value < 0.05,
                                               test=c.test, improvement=c.improvement)
                        if spec.regression_tolerance:
                            gate.checks.append(gate_check(kind="task", suite="", candidate=m.label, comparison=c,
                                                          baseline_value=values[c.metric],
                                                          candidate_value=cand_values[c.metric],
                                                          tolerance=spec.regression_tolerance, alpha=TASK_ALPHA))
                    else:
                        gate.checks.append(gate_check(kind="suite", suite=suite, candidate=m.label, comparison=c,
                                                      baseline_value=values[c.metric],
                                                      candidate_value=cand_values[c.metric],
                                                      tolerance=spec.gate.tolerance, alpha=spec.gate.alpha))
        gate.passed = all_passed(gate.checks)
        report.regression_gate_passed = gate.passed

    # -- error analysis ----------------------------------------------------------------------
    def _error_analysis(self, record, answered, prepared) -> dict[str, Any]:
        from tunesmith.api.common.v1 import common_pb2
        from tunesmith.evaluator.errors import analyse

        checks = self.rt.registry.all("error_checks")
        if record.spec.error_checks:
            checks = {name: checks[name] for name in record.spec.error_checks}
        report = record.report
        analyses = {}
        for label, rows in answered.items():
            analysis = analyse(checks, rows)
            analyses[label] = analysis
            report.error_analysis[label].CopyFrom(common_pb2.Metrics(
                name=f"errors:{label}", values={k: float(v) for k, v in analysis.counts.items()}))
            for category, idx in analysis.examples.items():
                report.error_examples.add(label=label, category=category, count=analysis.counts.get(category, 0),
                                          rows=[_source_row(prepared, i) for i in idx],
                                          predictions=[rows[i].prediction for i in idx])
            for ref, pred, count in analysis.confusion:
                report.confusions.add(label=label, reference=ref, prediction=pred, count=count)
        return analyses

    # -- pairwise judging ----------------------------------------------------------------------
    def _judge(self, record, control: JobControl, rows, answered) -> None:
        from tunesmith.evaluator.elo import bradley_terry, online_elo
        from tunesmith.evaluator.judging import judge_all
        from tunesmith.evaluator.runner import model_reference

        j = record.spec.judge
        n = min(len(rows), j.max_prompts or len(rows))
        prompts = [r.prompt for r in rows[:n]]
        references = [r.reference for r in rows[:n]]
        answers = {label: [r.prediction for r in out[:n]] for label, out in answered.items()}
        compare_many = self._judge_function(j)
        control.log(f"judging {len(answers)} models pairwise on {n} prompts with "
                    + (f"rule {j.rule!r}" if j.rule else f"model {j.model!r} ({j.template})"))
        outcomes, results = judge_all(prompts, answers, compare_many=compare_many, references=references,
                                      swap_positions=j.swap_positions)
        labels = [m.label for m in record.spec.models]
        if j.elo_k:
            ratings = online_elo(results, labels, k=j.elo_k, initial=j.elo_initial)
        else:
            ratings = bradley_terry(results, labels, initial=j.elo_initial, seed=record.spec.generation.seed)
        refs = {m.label: model_reference(m) for m in record.spec.models}
        report = record.report
        for r in ratings:
            report.elo.add(label=r.label, rating=r.rating, wins=r.wins, losses=r.losses, ties=r.ties,
                           ci_low=r.ci_low, ci_high=r.ci_high, model=refs[r.label])
        report.judged_pairs = len(results)
        report.inconsistent_pairs = sum(1 for r in results if not r.consistent)
        if j.leaderboard:
            from tunesmith.evaluator.leaderboard import update_leaderboard

            update_leaderboard(self.rt.storage, j.leaderboard, results, refs, evaluation_id=record.job.id,
                               judge=j.rule or j.model)
            control.log(f"leaderboard {j.leaderboard!r} updated")

    def _judge_function(self, j):
        """compare_many(items) for judge_all: a rule plugin, or a served model through the
        inference service's Generate with the judge template."""
        from tunesmith.evaluator.judging import ModelJudge, rule_compare

        if j.rule:
            return rule_compare(self.rt.registry.get("judges", j.rule))
        from tunesmith.client.inference import InferenceClient

        address = self.rt.peers.get("inference")
        if not address:
            raise JobFailed("no_inference_service", "a model judge needs the inference service's address",
                            "spec.judge.model")
        client = InferenceClient(address)
        template = self.rt.registry.get("judge_templates", j.template)

        def generate(prompts: list[str]) -> list[str]:
            from tunesmith.client.errors import TunesmithClientError

            try:
                return client.generate(j.model, prompts, max_new_tokens=j.max_new_tokens, temperature=0.0)
            except TunesmithClientError as exc:
                raise JobFailed("judge_failed", f"judge model {j.model!r} could not answer the {j.template!r} "
                                f"prompts: {exc}", "spec.judge.model") from None

        return ModelJudge(template, generate, rubric=j.rubric).compare_many

    # -- samples and storage -------------------------------------------------------------------
    def _samples(self, record, prepared, rows, answered, scores) -> None:
        keep = record.spec.keep_samples or 20
        first = next((name for name in record.spec.benchmarks
                      if self.rt.registry.get("benchmarks", name).needs == "generation"), "")
        for i in range(min(keep, len(rows))):
            sample = record.report.samples.add(row=_source_row(prepared, i), prompt=rows[i].prompt,
                                               reference=rows[i].reference)
            for label, out in answered.items():
                sample.outputs[label] = out[i].prediction
                stats = scores.get(label, {}).get(first)
                if stats is not None:
                    metric = next((mr for mr in stats.metrics if mr.statistic == "binary"), None)
                    if metric is not None:
                        sample.correct[label] = bool(stats.stats[i].get(metric.metric))

    def _store(self, record, control: JobControl, prepared, rows, answered, analyses) -> None:
        from tunesmith.core.formats.report import (
            EvaluationReport,
            OutputRow,
            store_report,
        )
        from tunesmith.core.records import to_dict

        spec = record.spec
        html = None
        if spec.html_report:
            from tunesmith.evaluator.html_report import render_html
            from tunesmith.evaluator.report_view import build_view

            curves = self._training_curves(control, spec)
            html = render_html(build_view(record, rows, answered, analyses, curves))
        art = store_report(  # report.json + every row's outputs (+ report.html)
            self.rt.storage,
            EvaluationReport(evaluation_id=record.job.id, report=to_dict(record.report), dataset_id=spec.dataset_id,
                             split=spec.split),
            (OutputRow(_source_row(prepared, i), r.prompt, r.reference,
                       {label: out[i].prediction for label, out in answered.items()})
             for i, r in enumerate(rows)), html=html)
        record.report_artifact.CopyFrom(control.output(art))
        if html is not None:
            from tunesmith.core.formats.report import HTML_FILE

            record.report.html_report.CopyFrom(record.report_artifact)
            control.log(f"HTML report: {art.uri} ({HTML_FILE})")
        control.save()

    def _training_curves(self, control: JobControl, spec) -> dict[str, Any]:
        """{model label: TrainingCurves} for models that name their training job, read from the
        trainer service over gRPC (Runtime.peers["trainer"]); models without one are left out."""
        wanted = [m for m in spec.models if m.training_job_id]
        address = self.rt.peers.get("trainer")
        if not wanted:
            return {}
        if not address:
            control.log("no trainer address (TUNESMITH_TRAINER_ADDRESS): the report has no loss curve", "warning")
            return {}
        from tunesmith.client.errors import TunesmithClientError
        from tunesmith.client.trainer import TrainerClient

        out = {}
        with TrainerClient(address) as trainer:
            for m in wanted:
                try:
                    out[m.label] = trainer.get_job(m.training_job_id, timeout=10).curves
                except TunesmithClientError as exc:
                    control.log(f"loss curve of {m.training_job_id} unavailable: {exc}", "warning")
        return out

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


def _source_row(prepared, i: int) -> int:
    return int(prepared[i].get("source_row") or i + 1)


def add_to_server(servicer, server) -> None:
    evaluator_pb2_grpc.add_EvaluatorServiceServicer_to_server(servicer, server)


__all__ = ["EvaluatorServicer", "add_to_server"]
