"""The evaluator in depth, through the real services on tiny models: adapters scored without
merging (equal to the merged model), every section of the report (gate, error analysis,
judging with ratings, leaderboard, HTML), and a training job whose quality gate runs on the
evaluator service."""
from __future__ import annotations

import itertools
import json

import pytest
from tunesmith.api.common.v1 import common_pb2
from tunesmith.api.data.v1 import data_pb2
from tunesmith.api.evaluator.v1 import evaluator_pb2
from tunesmith.api.trainer.v1 import trainer_pb2

from .conftest import banking_rows, import_model, wait_job, write_csv

INTENTS = ["card_arrival", "age_limit", "change_pin"]


def _store_adapter(runtime, model: str, folder) -> str:
    from tunesmith.core.formats.adapter import AdapterMeta, finalize_adapter

    finalize_adapter(folder, AdapterMeta(base_model_uri=runtime.models.get(model).artifact.uri, base_model_name=model,
                                         method="lora"))
    return runtime.storage.put_artifact("adapter", folder).uri


def _merged(adapter_dir, model_dir, out):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload().save_pretrained(str(out))
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(str(out))
    return str(out)


def _prompt_learning_adapter(runtime, model: str, model_dir: str, folder) -> str:
    """A trained-looking prefix-tuning adapter (random prefixes, scaled so greedy output changes)."""
    import torch
    from transformers import AutoModelForCausalLM

    from tunesmith.core.formats.adapter import AdapterMeta, finalize_adapter

    method = runtime.registry.get("peft_methods", "prefix_tuning")
    torch.manual_seed(5)
    peft_model = method.apply(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                              {"num_virtual_tokens": 4})
    with torch.no_grad():
        for p in peft_model.parameters():
            if p.requires_grad:
                p.normal_(0, 3.0)
    method.save(peft_model, folder)
    finalize_adapter(folder, AdapterMeta(base_model_uri=runtime.models.get(model).artifact.uri, base_model_name=model,
                                         method="prefix_tuning"))
    return runtime.storage.put_artifact("adapter", folder).uri


@pytest.fixture(scope="module")
def world(cluster, tiny_model_dir, tmp_path_factory):
    from tunesmith.testing.contracts import tiny_lora_adapter

    tmp = tmp_path_factory.mktemp("depth")
    import_model(cluster, "tiny-eval", tiny_model_dir)
    lora_dir = tiny_lora_adapter(tiny_model_dir, tmp / "lora", seed=3)
    merged = _merged(lora_dir, tiny_model_dir, tmp / "merged")
    import_model(cluster, "tiny-merged", merged)
    lora = _store_adapter(cluster.runtime, "tiny-eval", tmp / "lora")
    prefix = _prompt_learning_adapter(cluster.runtime, "tiny-eval", tiny_model_dir, tmp / "prefix")
    csv = write_csv(tmp / "rows.csv", banking_rows(INTENTS, 6, source="test.csv"))
    ds = cluster.data.RegisterDataset(data_pb2.RegisterDatasetRequest(source_uri=str(csv), spec=data_pb2.DatasetSpec(
        schema=data_pb2.SCHEMA_CLASSIFICATION, column_mapping={"input": "text", "output": "category"},
        split=data_pb2.SplitSpec(validation_fraction=1.0, seed=1))), timeout=60).dataset
    return {"dataset": ds.id, "lora": lora, "prefix": prefix, "tmp": tmp}


def _evaluate(cluster, spec) -> evaluator_pb2.Evaluation:
    ev = cluster.evaluator.CreateEvaluation(evaluator_pb2.CreateEvaluationRequest(spec=spec), timeout=60)
    done = wait_job(cluster.evaluator.GetEvaluation, ev.job.id, timeout=600)
    assert done.job.state == common_pb2.JOB_STATE_SUCCEEDED, done.job.error
    return done


def _outputs(cluster, ev) -> list[dict]:
    from tunesmith.core.formats.report import read_outputs

    return [r.to_dict() for r in read_outputs(cluster.runtime.storage.resolve(ev.report_artifact.uri))]


def _value(ev, label, metric):
    return next(m.value for s in ev.report.scores if s.label == label for m in s.metrics if m.metric == metric)


def test_an_adapter_scores_exactly_as_its_merged_model_and_unlike_its_base(cluster, world):
    ev = _evaluate(cluster, evaluator_pb2.EvaluationSpec(
        dataset_id=world["dataset"], benchmarks=["exact_match", "rouge"], generation={"max_new_tokens": 6},
        models=[{"label": "base", "model": "tiny-eval"},
                {"label": "adapter", "model": "tiny-eval", "adapter": {"uri": world["lora"]}},
                {"label": "merged", "model": "tiny-merged"},
                {"label": "prefix", "model": "tiny-eval", "adapter": {"uri": world["prefix"]}}]))
    rows = _outputs(cluster, ev)
    assert [r["outputs"]["adapter"] for r in rows] == [r["outputs"]["merged"] for r in rows]
    assert [r["outputs"]["adapter"] for r in rows] != [r["outputs"]["base"] for r in rows]
    # a prefix-tuning adapter cannot be merged, and is scored on its base all the same
    assert [r["outputs"]["prefix"] for r in rows] != [r["outputs"]["base"] for r in rows]
    assert _value(ev, "adapter", "rouge1") == _value(ev, "merged", "rouge1")
    # comparisons name the test each metric's statistic calls for
    tests = {c.metric: c.test for c in ev.report.comparisons if c.candidate == "adapter"}
    assert tests["exact_match.exact_match"] == "mcnemar" and tests["rouge.rouge1"] == "permutation"


def test_the_full_report_gate_errors_judge_leaderboard_and_html(cluster, world):
    spec = evaluator_pb2.EvaluationSpec(
        dataset_id=world["dataset"], benchmarks=["exact_match", "macro_f1", "bleu", "perplexity"],
        generation={"max_new_tokens": 8}, error_analysis=True, html_report=True,
        gate={"enabled": True, "max_rows": 6},
        judge={"rule": "shorter", "leaderboard": "tiny-board"},
        models=[{"label": "base", "model": "tiny-eval"},
                {"label": "adapter", "model": "tiny-eval", "adapter": {"uri": world["lora"]}},
                {"label": "merged", "model": "tiny-merged"}])
    ev = _evaluate(cluster, spec)
    report = ev.report
    labels = ["base", "adapter", "merged"]

    # the gate: both suites, every candidate, and the suites' own scores for every model
    checks = {(c.suite, c.candidate) for c in report.gate.checks if c.kind == "suite"}
    assert checks == {(s, c) for s in ("general_mc", "general_text") for c in ("adapter", "merged")}
    assert report.regression_gate_passed == report.gate.passed == all(c.passed for c in report.gate.checks)
    assert {s.label for s in report.gate.suite_scores} == set(labels)
    ppl = {s.label: next(m.value for m in s.metrics if m.metric == "perplexity") for s in report.gate.suite_scores}
    assert all(v > 1 for v in ppl.values())
    assert ppl["adapter"] == pytest.approx(ppl["merged"], rel=1e-5) and ppl["adapter"] != pytest.approx(ppl["base"])

    # error analysis: counted per model from the answers themselves
    rows = _outputs(cluster, ev)
    for label in labels:
        empty = sum(1 for r in rows if not r["outputs"][label].strip())
        assert report.error_analysis[label].values.get("empty_answer", 0) == empty
        invalid = sum(1 for r in rows if r["outputs"][label].strip() and
                      r["outputs"][label].strip().lower() not in INTENTS)
        got = sum(v for k, v in report.error_analysis[label].values.items() if k.startswith("invalid_label"))
        assert got == invalid

    # judging with the "shorter" rule: each model's points (win 1, tie 1/2: the shorter non-empty
    # answer wins, an empty one loses to a non-empty one) order the ratings, as Bradley-Terry does
    # in a round robin
    def verdict(x: str, y: str) -> float:
        x, y = x.strip(), y.strip()
        if bool(x) != bool(y):
            return 1.0 if x else 0.0
        return 0.5 if len(x) == len(y) else float(len(x) < len(y))

    points = {label: 0.0 for label in labels}
    for r in rows:
        for a, b in itertools.combinations(labels, 2):
            v = verdict(r["outputs"][a], r["outputs"][b])
            points[a] += v
            points[b] += 1 - v
    rating = {e.label: e.rating for e in report.elo}
    for a, b in itertools.permutations(labels, 2):
        if points[a] > points[b]:
            assert rating[a] > rating[b], (points, rating)
    assert all(e.ci_low <= e.rating <= e.ci_high for e in report.elo)
    assert report.judged_pairs == 3 * len(rows)

    from tunesmith.evaluator.leaderboard import read_leaderboard

    board = read_leaderboard(cluster.runtime.storage, "tiny-board")
    assert len(board.ratings) == 3

    # the HTML report: in the report artifact, self-contained, with its figures
    from tunesmith.core.formats.report import HTML_FILE

    assert report.html_report.uri == ev.report_artifact.uri
    html = (cluster.runtime.storage.resolve(ev.report_artifact.uri) / HTML_FILE).read_text()
    assert html.count("<svg") >= 3 and "http://" not in html and "https://" not in html
    stored = json.loads((cluster.runtime.storage.resolve(ev.report_artifact.uri) / "report.json").read_text())
    assert stored["report"]["gate"].get("passed", False) == report.gate.passed  # proto JSON omits false


def test_a_training_job_runs_its_quality_gate_on_the_evaluator(cluster, world, tiny_model_dir):
    csv = write_csv(world["tmp"] / "train.csv", banking_rows(INTENTS, 8))
    ds = cluster.data.RegisterDataset(data_pb2.RegisterDatasetRequest(source_uri=str(csv), spec=data_pb2.DatasetSpec(
        schema=data_pb2.SCHEMA_CLASSIFICATION, column_mapping={"input": "text", "output": "category"},
        split=data_pb2.SplitSpec(validation_rows=6, seed=1))), timeout=60).dataset
    job = cluster.trainer.CreateTrainingJob(trainer_pb2.CreateTrainingJobRequest(spec=trainer_pb2.TrainingJobSpec(
        base_model="tiny-eval", dataset_id=ds.id, method=trainer_pb2.MethodSpec(lora=trainer_pb2.LoraConfig(rank=4)),
        hyperparameters=trainer_pb2.Hyperparameters(epochs=1, batch_size=4, learning_rate=1e-3),
        gate=trainer_pb2.QualityGate(enabled=True, max_rows=6))), timeout=30)
    assert list(job.spec.gate.suites) == ["general_mc", "general_text"]
    done = wait_job(cluster.trainer.GetTrainingJob, job.job.id, timeout=600)
    assert done.job.state == common_pb2.JOB_STATE_SUCCEEDED, done.job.error
    assert done.result.gate_evaluation_id
    ev = cluster.evaluator.GetEvaluation(common_pb2.GetJobRequest(job_id=done.result.gate_evaluation_id), timeout=30)
    assert ev.spec.models[1].adapter.uri == done.result.adapter.uri  # base + adapter, not merged
    assert done.result.gate_passed == ev.report.gate.passed
    assert {c.suite for c in ev.report.gate.checks} == {"general_mc", "general_text"}


def test_multiple_choice_by_loglikelihood_matches_the_backend_and_benchmark_run_directly(cluster, world,
                                                                                          tiny_model_dir):
    """A multiple-choice dataset through the data service and CreateEvaluation gives the acc,
    acc_norm and perplexity that the backend's loglikelihood and the benchmarks give in-process."""
    from importlib import resources

    from tunesmith.core.contracts import EvalRow
    from tunesmith.evaluator.rows import with_loglikelihoods
    from tunesmith.evaluator.scoring import score_benchmark

    items = [json.loads(line) for line in
             resources.files("tunesmith.evaluator.suites").joinpath("general_mc.jsonl").read_text().splitlines()[:10]]
    path = world["tmp"] / "quiz.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    ds = cluster.data.RegisterDataset(data_pb2.RegisterDatasetRequest(source_uri=str(path), spec=data_pb2.DatasetSpec(
        schema=data_pb2.SCHEMA_MULTIPLE_CHOICE, split=data_pb2.SplitSpec(validation_fraction=1.0))), timeout=60).dataset
    ev = _evaluate(cluster, evaluator_pb2.EvaluationSpec(
        dataset_id=ds.id, benchmarks=["mc_loglikelihood", "perplexity"], max_rows=10,
        models=[{"label": "base", "model": "tiny-eval"}]))

    backend = cluster.runtime.registry.get("inference_backends", "transformers")
    model = backend.load(tiny_model_dir)
    try:
        from tunesmith.core.formats.dataset import read_prepared

        prepared = read_prepared(cluster.runtime.storage, cluster.runtime.datasets.get(ds.id).artifact.uri).rows(
            "validation")
        rows = [EvalRow(prompt=r["prompt"], reference=r["completion"].strip(), choices=tuple(r["choices"]),
                        gold=r["gold"]) for r in prepared]
        for name in ("mc_loglikelihood", "perplexity"):
            bench = cluster.runtime.registry.get("benchmarks", name)
            requests = [bench.requests(r, {}) for r in rows]
            scored = with_loglikelihoods(rows, requests, model.loglikelihood([q for qs in requests for q in qs]))
            for mr in score_benchmark(bench, scored, {}).metrics:
                assert _value(ev, "base", mr.metric) == pytest.approx(mr.value, rel=1e-6), mr.metric
    finally:
        model.close()
    assert {r["gold"] for r in prepared} == {i["answer"] for i in items}


def test_a_served_model_judges_through_the_inference_service(cluster, world):
    """judge.model: a model loaded on the inference service answers the pairwise template over
    gRPC. The tiny model never writes a [[A]]/[[B]] verdict, so every pair is a tie: the ratings
    are equal and no pair counts as inconsistent."""
    import time

    from tunesmith.api.inference.v1 import inference_pb2

    served = cluster.inference.LoadModel(inference_pb2.LoadModelRequest(  # room for the judge prompt
        name="tiny-judge", model="tiny-eval", backend="transformers", max_model_len=2048), timeout=60)
    while served.state == inference_pb2.SERVED_MODEL_STATE_LOADING:
        time.sleep(0.2)
        served = cluster.inference.GetServedModel(inference_pb2.GetServedModelRequest(name="tiny-judge"), timeout=10)
    assert served.state == inference_pb2.SERVED_MODEL_STATE_READY, served.error
    ev = _evaluate(cluster, evaluator_pb2.EvaluationSpec(
        dataset_id=world["dataset"], max_rows=3, generation={"max_new_tokens": 4},
        judge={"model": "tiny-judge", "rubric": "prefer the correct intent", "max_new_tokens": 8},
        models=[{"label": "base", "model": "tiny-eval"},
                {"label": "adapter", "model": "tiny-eval", "adapter": {"uri": world["lora"]}}]))
    assert ev.spec.judge.template == "pairwise" and ev.spec.judge.swap_positions
    assert ev.report.judged_pairs == 3 and ev.report.inconsistent_pairs == 0
    ratings = {e.label: e for e in ev.report.elo}
    assert ratings["base"].ties == 3 and ratings["base"].rating == pytest.approx(ratings["adapter"].rating)
