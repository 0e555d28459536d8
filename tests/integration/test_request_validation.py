"""Table-driven: for every RPC, malformed and out-of-range values of each field are refused before
anything runs, with the right status code, the field path in google.rpc BadRequest (or ErrorInfo),
and storage unchanged.

Each case starts from a request that is valid (or, for Get/Cancel-style RPCs, well-formed), sets
one field, and expects (code, field path).
"""
from __future__ import annotations

import math

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tunesmith.api.common.v1 import common_pb2
from tunesmith.api.data.v1 import data_pb2
from tunesmith.api.evaluator.v1 import evaluator_pb2
from tunesmith.api.inference.v1 import inference_pb2
from tunesmith.api.trainer.v1 import trainer_pb2

from .conftest import banking_rows, write_csv

C = grpc.StatusCode
TWO = [{"label": "base", "model": "tiny"}, {"label": "tuned", "model": "tiny"}]
INTENTS = ["card_arrival", "age_limit"]


def _spec(**kw) -> data_pb2.DatasetSpec:
    spec = data_pb2.DatasetSpec(schema=data_pb2.SCHEMA_CLASSIFICATION, column_mapping={"input": "text", "output": "category"},
                                split=data_pb2.SplitSpec(validation_fraction=0.25, seed=1), **kw)
    return spec


@pytest.fixture(scope="module")
def world(cluster, tiny_model_dir, tmp_path_factory):
    """A tiny model "tiny", one dataset with train/validation splits, a served model "served"."""
    cluster.runtime.models.register("tiny", tiny_model_dir)
    import shutil

    other = tmp_path_factory.mktemp("other") / "tiny-other"  # the same weights, another artifact
    shutil.copytree(tiny_model_dir, other)
    (other / "README.md").write_text("another model\n")
    cluster.runtime.models.register("tiny-other", str(other))
    path = write_csv(tmp_path_factory.mktemp("csv") / "rows.csv", banking_rows(INTENTS, 8))
    ds = cluster.data.RegisterDataset(data_pb2.RegisterDatasetRequest(source_uri=str(path), spec=_spec()),
                                      timeout=60).dataset
    served = cluster.inference.LoadModel(inference_pb2.LoadModelRequest(name="served", model="tiny",
                                                                        backend="transformers"), timeout=30)
    import time
    while served.state == inference_pb2.SERVED_MODEL_STATE_LOADING:
        time.sleep(0.2)
        served = cluster.inference.GetServedModel(inference_pb2.GetServedModelRequest(name="served"), timeout=10)
    assert served.state == inference_pb2.SERVED_MODEL_STATE_READY, served.error
    return {"csv": path, "dataset": ds.id, "prefix_adapter": _prefix_adapter(cluster.runtime, "tiny", tiny_model_dir)}


def _prefix_adapter(runtime, model: str, model_dir: str) -> str:
    """A stored prefix-tuning adapter of `model` (its URI): an adapter that cannot be merged."""
    import torch
    from transformers import AutoModelForCausalLM

    from tunesmith.core.formats.adapter import AdapterMeta, finalize_adapter

    method = runtime.registry.get("peft_methods", "prefix_tuning")
    peft_model = method.apply(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                              {"num_virtual_tokens": 2})
    with runtime.storage.staging_dir() as stage:
        method.save(peft_model, stage / "adapter")
        finalize_adapter(stage / "adapter", AdapterMeta(base_model_uri=runtime.models.get(model).artifact.uri,
                                                        base_model_name=model, method="prefix_tuning"))
        return runtime.storage.put_artifact("adapter", stage / "adapter", move=True).uri


def _snapshot(storage) -> list[str]:
    root = storage.root
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if ".tmp" not in p.relative_to(root).parts and p.name != "events.jsonl")


def _violations(err: grpc.RpcError) -> tuple[list[str], str]:
    status = rpc_status.from_call(err)
    fields, reason = [], ""
    for d in status.details if status else []:
        if d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            d.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
        elif d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            reason = info.reason
    return fields, reason


# -- valid starting points --------------------------------------------------------------------
def training(w, **spec) -> trainer_pb2.CreateTrainingJobRequest:
    base = dict(base_model="tiny", dataset_id=w["dataset"])
    base.update(spec)
    return trainer_pb2.CreateTrainingJobRequest(spec=base)


def hp(w, **h):
    return training(w, hyperparameters=h)


def evaluation(w, **spec) -> evaluator_pb2.CreateEvaluationRequest:
    base = dict(dataset_id=w["dataset"], models=[{"label": "base", "model": "tiny"}])
    base.update(spec)
    return evaluator_pb2.CreateEvaluationRequest(spec=base)


def gen(**sampling) -> inference_pb2.GenerateRequest:
    return inference_pb2.GenerateRequest(model="served", prompts=[{"text": "hi"}], sampling=sampling)


def register(w, **spec) -> data_pb2.RegisterDatasetRequest:
    s = _spec()
    for k, v in spec.items():
        if isinstance(v, dict):
            getattr(s, k).MergeFrom(type(getattr(s, k))(**v))
        else:
            setattr(s, k, v) if not isinstance(v, list) else getattr(s, k).extend(v)
    return data_pb2.RegisterDatasetRequest(source_uri=str(w["csv"]), spec=s)


NAN = math.nan
CASES = [
    # -- TrainerService.CreateTrainingJob ------------------------------------------------------
    ("trainer", "CreateTrainingJob", lambda w: training(w, base_model=""), C.INVALID_ARGUMENT, "spec.base_model"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, gate={"enabled": True, "suites": ["trivia"]}), C.INVALID_ARGUMENT, "spec.gate.suites[0]"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, gate={"enabled": True, "alpha": 1}), C.INVALID_ARGUMENT, "spec.gate.alpha"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, gate={"tolerance": 0.5}), C.INVALID_ARGUMENT, "spec.gate.enabled"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, base_model="nope"), C.NOT_FOUND, "spec.base_model"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, dataset_id=""), C.INVALID_ARGUMENT, "spec.dataset_id"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, dataset_id="ds-nope"), C.NOT_FOUND, "spec.dataset_id"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, train_split="nope"), C.NOT_FOUND, "spec.train_split"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, validation_split="nope"), C.NOT_FOUND, "spec.validation_split"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, validation_split="train"), C.INVALID_ARGUMENT, "spec.validation_split"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, objective=7), C.INVALID_ARGUMENT, "spec.objective"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, objective=trainer_pb2.OBJECTIVE_DPO), C.INVALID_ARGUMENT, "spec.dataset_id"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, recipe="ppo"), C.INVALID_ARGUMENT, "spec.recipe"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, recipe="dpo", objective=trainer_pb2.OBJECTIVE_SFT), C.INVALID_ARGUMENT, "spec.recipe"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, dpo={"beta": 0.1}), C.INVALID_ARGUMENT, "spec.dpo"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, objective=trainer_pb2.OBJECTIVE_DPO, dpo={"beta": -1}), C.INVALID_ARGUMENT, "spec.dpo.beta"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, objective=trainer_pb2.OBJECTIVE_DPO, dpo={"loss_type": 9}), C.INVALID_ARGUMENT, "spec.dpo.loss_type"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, retry={"max_restarts": -1}), C.INVALID_ARGUMENT, "spec.retry.max_restarts"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, retry={"max_restarts": 1000}), C.INVALID_ARGUMENT, "spec.retry.max_restarts"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, method={"name": "lorax"}), C.INVALID_ARGUMENT, "spec.method.name"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, method={"lora": {"rank": -1}}), C.INVALID_ARGUMENT, "spec.method.lora.rank"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, method={"lora": {"dropout": 1.5}}), C.INVALID_ARGUMENT, "spec.method.lora.dropout"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, method={"lora": {"alpha": -2}}), C.INVALID_ARGUMENT, "spec.method.lora.alpha"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, method={"lora": {"target_modules": [""]}}), C.INVALID_ARGUMENT, "spec.method.lora.target_modules"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, method={"options": {"rank": 4}}), C.INVALID_ARGUMENT, "spec.method.name"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, method={"name": "lora", "options": {"rank": 4}}), C.INVALID_ARGUMENT, "spec.method.options"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, method={"qlora": {"bits": 3}}), C.INVALID_ARGUMENT, "spec.method.qlora.bits"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, method={"qlora": {"quant_type": 9}}), C.INVALID_ARGUMENT, "spec.method.qlora.quant_type"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, method={"qlora": {"compute_dtype": 9}}), C.INVALID_ARGUMENT, "spec.method.qlora.compute_dtype"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, method={"qlora": {"bits": 8, "double_quant": True}}), C.INVALID_ARGUMENT, "spec.method.qlora.double_quant"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, method={"qlora": {"lora": {"rank": -1}}}), C.INVALID_ARGUMENT, "spec.method.qlora.lora.rank"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, method={"full": {}}, merge=True), C.INVALID_ARGUMENT, "spec.merge"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, method={"ia3": {"target_modules": ["k_proj"], "feedforward_modules": ["down_proj"]}}), C.INVALID_ARGUMENT, "spec.method.ia3.feedforward_modules"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, method={"ia3": {"target_modules": [""]}}), C.INVALID_ARGUMENT, "spec.method.ia3.target_modules"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, method={"prefix_tuning": {"num_virtual_tokens": -1}}), C.INVALID_ARGUMENT, "spec.method.prefix_tuning.num_virtual_tokens"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, method={"prefix_tuning": {}}, merge=True), C.INVALID_ARGUMENT, "spec.merge"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, method={"prompt_tuning": {"num_virtual_tokens": 1000}}), C.INVALID_ARGUMENT, "spec.method.prompt_tuning.num_virtual_tokens"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, method={"prompt_tuning": {}}, merge=True), C.INVALID_ARGUMENT, "spec.merge"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, method={"name": "lora", "prompt_tuning": {}}), C.INVALID_ARGUMENT, "spec.method.prompt_tuning"),
    ("trainer", "CreateTrainingJob", lambda w: hp(w, learning_rate=5), C.INVALID_ARGUMENT, "spec.hyperparameters.learning_rate"),
    ("trainer", "CreateTrainingJob", lambda w: hp(w, learning_rate=NAN), C.INVALID_ARGUMENT, "spec.hyperparameters.learning_rate"),
    ("trainer", "CreateTrainingJob", lambda w: hp(w, learning_rate=-1e-4), C.INVALID_ARGUMENT, "spec.hyperparameters.learning_rate"),
    ("trainer", "CreateTrainingJob", lambda w: hp(w, epochs=-1), C.INVALID_ARGUMENT, "spec.hyperparameters.epochs"),
    ("trainer", "CreateTrainingJob", lambda w: hp(w, epochs=1000), C.INVALID_ARGUMENT, "spec.hyperparameters.epochs"),
    ("trainer", "CreateTrainingJob", lambda w: hp(w, batch_size=100_000), C.INVALID_ARGUMENT, "spec.hyperparameters.batch_size"),
    ("trainer", "CreateTrainingJob", lambda w: hp(w, max_seq_length=1_000_000), C.INVALID_ARGUMENT, "spec.hyperparameters.max_seq_length"),
    ("trainer", "CreateTrainingJob", lambda w: hp(w, max_seq_length=1), C.INVALID_ARGUMENT, "spec.hyperparameters.max_seq_length"),
    ("trainer", "CreateTrainingJob", lambda w: hp(w, gradient_accumulation_steps=-3), C.INVALID_ARGUMENT, "spec.hyperparameters.gradient_accumulation_steps"),
    ("trainer", "CreateTrainingJob", lambda w: hp(w, max_steps=-1), C.INVALID_ARGUMENT, "spec.hyperparameters.max_steps"),
    ("trainer", "CreateTrainingJob", lambda w: hp(w, warmup_ratio=1.5), C.INVALID_ARGUMENT, "spec.hyperparameters.warmup_ratio"),
    ("trainer", "CreateTrainingJob", lambda w: hp(w, warmup_steps=-1), C.INVALID_ARGUMENT, "spec.hyperparameters.warmup_steps"),
    ("trainer", "CreateTrainingJob", lambda w: hp(w, weight_decay=-1), C.INVALID_ARGUMENT, "spec.hyperparameters.weight_decay"),
    ("trainer", "CreateTrainingJob", lambda w: hp(w, max_grad_norm=-1), C.INVALID_ARGUMENT, "spec.hyperparameters.max_grad_norm"),
    ("trainer", "CreateTrainingJob", lambda w: hp(w, seed=-5), C.INVALID_ARGUMENT, "spec.hyperparameters.seed"),
    ("trainer", "CreateTrainingJob", lambda w: hp(w, log_every_steps=-1), C.INVALID_ARGUMENT, "spec.hyperparameters.log_every_steps"),
    ("trainer", "CreateTrainingJob", lambda w: hp(w, eval_every_steps=-1), C.INVALID_ARGUMENT, "spec.hyperparameters.eval_every_steps"),
    ("trainer", "CreateTrainingJob", lambda w: hp(w, early_stopping_patience=-1), C.INVALID_ARGUMENT, "spec.hyperparameters.early_stopping_patience"),
    ("trainer", "CreateTrainingJob", lambda w: hp(w, lr_scheduler=9), C.INVALID_ARGUMENT, "spec.hyperparameters.lr_scheduler"),
    ("trainer", "CreateTrainingJob", lambda w: hp(w, optimizer=9), C.INVALID_ARGUMENT, "spec.hyperparameters.optimizer"),
    ("trainer", "CreateTrainingJob", lambda w: hp(w, dtype=9), C.INVALID_ARGUMENT, "spec.hyperparameters.dtype"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, method={"prompt_tuning": {}}, hyperparameters={"packing": True}), C.INVALID_ARGUMENT, "spec.hyperparameters.packing"),
    ("trainer", "CreateTrainingJob", lambda w: hp(w, checkpoint_every_steps=-10), C.INVALID_ARGUMENT, "spec.hyperparameters.checkpoint_every_steps"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, executor="slurm"), C.INVALID_ARGUMENT, "spec.executor"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, device="tpu"), C.INVALID_ARGUMENT, "spec.device"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, device="cuda:7"), C.FAILED_PRECONDITION, "spec.device"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, num_processes=-1), C.INVALID_ARGUMENT, "spec.num_processes"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, num_processes=1000), C.INVALID_ARGUMENT, "spec.num_processes"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, resume_from_checkpoint="artifact://adapter/" + "0" * 64), C.INVALID_ARGUMENT, "spec.resume_from_checkpoint"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, resume_from_checkpoint="artifact://checkpoint/" + "0" * 64), C.NOT_FOUND, "spec.resume_from_checkpoint"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, serve_as="bad name"), C.INVALID_ARGUMENT, "spec.serve_as"),
    ("trainer", "CreateTrainingJob", lambda w: training(w, serve_check={"prompts": 3}), C.INVALID_ARGUMENT, "spec.serve_check"),
    ("trainer", "CreateTrainingJob", lambda w: trainer_pb2.CreateTrainingJobRequest(spec=training(w).spec, labels={"Bad Key": "x"}), C.INVALID_ARGUMENT, "labels['Bad Key']"),
    ("trainer", "CreateTrainingJob", lambda w: trainer_pb2.CreateTrainingJobRequest(spec=training(w).spec, idempotency_key="has space"), C.INVALID_ARGUMENT, "idempotency_key"),
    # -- TrainerService: other unary RPCs -------------------------------------------------------
    ("trainer", "GetTrainingJob", lambda w: common_pb2.GetJobRequest(job_id="train-nope"), C.NOT_FOUND, "job_id"),
    ("trainer", "CancelTrainingJob", lambda w: common_pb2.CancelJobRequest(job_id="../x"), C.NOT_FOUND, "job_id"),
    ("trainer", "ListTrainingJobs", lambda w: common_pb2.ListJobsRequest(page={"page_size": -1}), C.INVALID_ARGUMENT, "page.page_size"),
    ("trainer", "ListTrainingJobs", lambda w: common_pb2.ListJobsRequest(page={"page_size": 5000}), C.INVALID_ARGUMENT, "page.page_size"),
    ("trainer", "ListTrainingJobs", lambda w: common_pb2.ListJobsRequest(page={"page_token": "not-a-token"}), C.INVALID_ARGUMENT, "page.page_token"),
    ("trainer", "ListTrainingJobs", lambda w: common_pb2.ListJobsRequest(states=[42]), C.INVALID_ARGUMENT, "states[0]"),
    ("trainer", "CreateMergeJob", lambda w: trainer_pb2.CreateMergeJobRequest(), C.INVALID_ARGUMENT, "spec.adapter.uri"),
    ("trainer", "CreateMergeJob", lambda w: trainer_pb2.CreateMergeJobRequest(spec={"adapter": {"uri": "artifact://adapter/" + "0" * 64}}), C.NOT_FOUND, "spec.adapter.uri"),
    ("trainer", "CreateMergeJob", lambda w: trainer_pb2.CreateMergeJobRequest(spec={"adapter": {"uri": "/etc/passwd"}}), C.INVALID_ARGUMENT, "spec.adapter.uri"),
    ("trainer", "CreateMergeJob", lambda w: trainer_pb2.CreateMergeJobRequest(spec={"adapter": {"uri": "artifact://adapter/x"}, "dtype": 9}), C.INVALID_ARGUMENT, "spec.dtype"),
    ("trainer", "CreateMergeJob", lambda w: trainer_pb2.CreateMergeJobRequest(spec={"adapter": {"uri": w["prefix_adapter"]}}), C.FAILED_PRECONDITION, "spec.adapter.uri"),
    ("trainer", "GetMergeJob", lambda w: common_pb2.GetJobRequest(job_id="merge-nope"), C.NOT_FOUND, "job_id"),
    ("trainer", "CancelMergeJob", lambda w: common_pb2.CancelJobRequest(job_id="merge-nope"), C.NOT_FOUND, "job_id"),
    ("trainer", "CancelModelImportJob", lambda w: common_pb2.CancelJobRequest(job_id="model-nope"), C.NOT_FOUND, "job_id"),
    ("trainer", "CreateModelImportJob", lambda w: trainer_pb2.CreateModelImportJobRequest(spec={"name": "Bad Name", "path": str(w["csv"])}), C.INVALID_ARGUMENT, "spec.name"),
    ("trainer", "CreateModelImportJob", lambda w: trainer_pb2.CreateModelImportJobRequest(spec={"name": "ok"}), C.INVALID_ARGUMENT, "spec.path"),
    ("trainer", "CreateModelImportJob", lambda w: trainer_pb2.CreateModelImportJobRequest(spec={"name": "ok", "path": "/no/such/folder"}), C.NOT_FOUND, "spec.path"),
    ("trainer", "CreateModelImportJob", lambda w: trainer_pb2.CreateModelImportJobRequest(spec={"name": "ok", "path": str(w["csv"])}), C.NOT_FOUND, "spec.path"),
    ("trainer", "GetModelImportJob", lambda w: common_pb2.GetJobRequest(job_id="model-nope"), C.NOT_FOUND, "job_id"),
    ("trainer", "PlanMemory", lambda w: trainer_pb2.PlanMemoryRequest(), C.INVALID_ARGUMENT, "spec.base_model"),
    ("trainer", "PlanMemory", lambda w: trainer_pb2.PlanMemoryRequest(model_config_json="{not json"), C.INVALID_ARGUMENT, "model_config_json"),
    ("trainer", "ResumeTrainingJob", lambda w: trainer_pb2.ResumeTrainingJobRequest(), C.INVALID_ARGUMENT, "job_id"),
    ("trainer", "ResumeTrainingJob", lambda w: trainer_pb2.ResumeTrainingJobRequest(job_id="train-nope"), C.NOT_FOUND, "job_id"),
    ("trainer", "ResumeTrainingJob", lambda w: trainer_pb2.ResumeTrainingJobRequest(job_id="train-nope", checkpoint="/etc/passwd"), C.INVALID_ARGUMENT, "checkpoint"),
    ("trainer", "CreateSweep", lambda w: trainer_pb2.CreateSweepRequest(), C.UNIMPLEMENTED, None),
    ("trainer", "GetSweep", lambda w: trainer_pb2.GetSweepRequest(sweep_id="s"), C.NOT_FOUND, "sweep_id"),
    # -- EvaluatorService ------------------------------------------------------------------------
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, dataset_id=""), C.INVALID_ARGUMENT, "spec.dataset_id"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, dataset_id="ds-nope"), C.NOT_FOUND, "spec.dataset_id"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, split="nope"), C.NOT_FOUND, "spec.split"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, models=[]), C.INVALID_ARGUMENT, "spec.models"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, models=[{"label": "", "model": "tiny"}]), C.INVALID_ARGUMENT, "spec.models[0].label"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, models=[{"label": "a", "model": "nope"}]), C.NOT_FOUND, "spec.models[0].model"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, models=[{"label": "a", "model": "tiny"}, {"label": "a", "model": "tiny"}]), C.INVALID_ARGUMENT, "spec.models[1].label"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, benchmarks=["bleurt"]), C.INVALID_ARGUMENT, "spec.benchmarks[0]"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, backend="onnx"), C.INVALID_ARGUMENT, "spec.backend"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, baseline="other"), C.INVALID_ARGUMENT, "spec.baseline"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, max_rows=-1), C.INVALID_ARGUMENT, "spec.max_rows"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, keep_samples=-1), C.INVALID_ARGUMENT, "spec.keep_samples"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, regression_tolerance=NAN), C.INVALID_ARGUMENT, "spec.regression_tolerance"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, generation={"max_new_tokens": -4}), C.INVALID_ARGUMENT, "spec.generation.max_new_tokens"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, generation={"temperature": -1}), C.INVALID_ARGUMENT, "spec.generation.temperature"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, generation={"top_p": 3}), C.INVALID_ARGUMENT, "spec.generation.top_p"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, generation={"batch_size": 100_000}), C.INVALID_ARGUMENT, "spec.generation.batch_size"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, generation={"stop": [""]}), C.INVALID_ARGUMENT, "spec.generation.stop[0]"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, generation={"seed": -1}), C.INVALID_ARGUMENT, "spec.generation.seed"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, judge={"rule": "shorter"}), C.INVALID_ARGUMENT, "spec.judge"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, models=TWO, judge={"rule": "shorter", "model": "served"}), C.INVALID_ARGUMENT, "spec.judge"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, models=TWO, judge={"rule": "nope"}), C.INVALID_ARGUMENT, "spec.judge.rule"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, models=TWO, judge={"rule": "shorter", "template": "nope"}), C.INVALID_ARGUMENT, "spec.judge.template"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, models=TWO, judge={"rule": "shorter", "elo_k": 500}), C.INVALID_ARGUMENT, "spec.judge.elo_k"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, models=TWO, judge={"rule": "shorter", "max_prompts": -1}), C.INVALID_ARGUMENT, "spec.judge.max_prompts"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, models=TWO, judge={"rule": "shorter", "leaderboard": "no spaces"}), C.INVALID_ARGUMENT, "spec.judge.leaderboard"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, models=TWO, judge={"model": "not-loaded"}), C.FAILED_PRECONDITION, "spec.judge.model"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, models=TWO, judge={"model": "served", "max_new_tokens": 5000}), C.INVALID_ARGUMENT, "spec.judge.max_new_tokens"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, models=TWO, judge={"rule": "shorter", "max_new_tokens": 5}), C.INVALID_ARGUMENT, "spec.judge.max_new_tokens"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, models=TWO, judge={"rule": "shorter", "rubric": "be kind"}), C.INVALID_ARGUMENT, "spec.judge.rubric"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, models=TWO, judge={"rule": "shorter", "template": "pairwise"}), C.INVALID_ARGUMENT, "spec.judge.template"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, models=[{"label": "a", "model": "tiny", "training_job_id": "train-x"}]), C.INVALID_ARGUMENT, "spec.models[0].training_job_id"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, error_analysis=True, error_checks=["nope"]), C.INVALID_ARGUMENT, "spec.error_checks[0]"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, error_checks=["empty_answer"]), C.INVALID_ARGUMENT, "spec.error_checks"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, options={"nope": {}}), C.INVALID_ARGUMENT, "spec.options.nope"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, options={"exact_match": 3}), C.INVALID_ARGUMENT, "spec.options.exact_match"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, options={"exact_match": {"typo": 1}}), C.INVALID_ARGUMENT, "spec.options.exact_match.typo"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, options={"exact_match": {"x": NAN}}), C.INVALID_ARGUMENT, "spec.options.exact_match.x"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, benchmarks=["mc_loglikelihood"]), C.FAILED_PRECONDITION, "spec.benchmarks[0]"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, benchmarks=["exact_match", "exact_match"]), C.INVALID_ARGUMENT, "spec.benchmarks"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, gate={"enabled": True}), C.INVALID_ARGUMENT, "spec.gate"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, models=TWO, gate={"enabled": True, "suites": ["nope"]}), C.INVALID_ARGUMENT, "spec.gate.suites[0]"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, models=TWO, gate={"enabled": True, "alpha": 1.5}), C.INVALID_ARGUMENT, "spec.gate.alpha"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, models=TWO, gate={"enabled": True, "tolerance": -1}), C.INVALID_ARGUMENT, "spec.gate.tolerance"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, models=TWO, gate={"tolerance": 0.1}), C.INVALID_ARGUMENT, "spec.gate.enabled"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, models=[{"label": "a", "model": "tiny", "adapter": {"uri": "/etc/passwd"}}]), C.INVALID_ARGUMENT, "spec.models[0].adapter.uri"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, models=[{"label": "a", "model": "tiny", "adapter": {"uri": "artifact://adapter/" + "0" * 64}}]), C.NOT_FOUND, "spec.models[0].adapter.uri"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, models=[{"label": "a", "model": "tiny", "adapter": {"uri": w["prefix_adapter"], "kind": "model"}}]), C.INVALID_ARGUMENT, "spec.models[0].adapter.kind"),
    ("evaluator", "CreateEvaluation", lambda w: evaluation(w, models=[{"label": "a", "model": "tiny-other", "adapter": {"uri": w["prefix_adapter"]}}]), C.FAILED_PRECONDITION, "spec.models[0].adapter.uri"),
    ("evaluator", "GetEvaluation", lambda w: common_pb2.GetJobRequest(job_id="evalu-nope"), C.NOT_FOUND, "job_id"),
    ("evaluator", "CancelEvaluation", lambda w: common_pb2.CancelJobRequest(job_id="evalu-nope"), C.NOT_FOUND, "job_id"),
    ("evaluator", "ListEvaluations", lambda w: common_pb2.ListJobsRequest(page={"page_token": "!!"}), C.INVALID_ARGUMENT, "page.page_token"),
    # -- InferenceService ------------------------------------------------------------------------
    ("inference", "Generate", lambda w: gen(max_new_tokens=-1), C.INVALID_ARGUMENT, "sampling.max_new_tokens"),
    ("inference", "Generate", lambda w: gen(max_new_tokens=100_000), C.INVALID_ARGUMENT, "sampling.max_new_tokens"),
    ("inference", "Generate", lambda w: gen(temperature=-0.5), C.INVALID_ARGUMENT, "sampling.temperature"),
    ("inference", "Generate", lambda w: gen(temperature=NAN), C.INVALID_ARGUMENT, "sampling.temperature"),
    ("inference", "Generate", lambda w: gen(top_p=-1), C.INVALID_ARGUMENT, "sampling.top_p"),
    ("inference", "Generate", lambda w: gen(top_k=-1), C.INVALID_ARGUMENT, "sampling.top_k"),
    ("inference", "Generate", lambda w: gen(repetition_penalty=-1), C.INVALID_ARGUMENT, "sampling.repetition_penalty"),
    ("inference", "Generate", lambda w: gen(stop=["x"] * 17), C.INVALID_ARGUMENT, "sampling.stop"),
    ("inference", "Generate", lambda w: gen(seed=-1), C.INVALID_ARGUMENT, "sampling.seed"),
    ("inference", "Generate", lambda w: inference_pb2.GenerateRequest(model="served"), C.INVALID_ARGUMENT, "prompts"),
    ("inference", "Generate", lambda w: inference_pb2.GenerateRequest(model="served", prompts=[{}]), C.INVALID_ARGUMENT, "prompts[0]"),
    ("inference", "Generate", lambda w: inference_pb2.GenerateRequest(model="served", prompts=[{"chat": {}}]), C.INVALID_ARGUMENT, "prompts[0].chat.messages"),
    ("inference", "Generate", lambda w: inference_pb2.GenerateRequest(model="served", prompts=[{"chat": {"messages": [{"content": "hi"}]}}]), C.INVALID_ARGUMENT, "prompts[0].chat.messages[0].role"),
    ("inference", "Generate", lambda w: inference_pb2.GenerateRequest(model="nope", prompts=[{"text": "hi"}]), C.NOT_FOUND, "model"),
    ("inference", "Generate", lambda w: inference_pb2.GenerateRequest(model="served", prompts=[{"text": "hi"}], top_logprobs=2), C.INVALID_ARGUMENT, "top_logprobs"),
    ("inference", "Generate", lambda w: inference_pb2.GenerateRequest(model="served", prompts=[{"text": "hi"}], logprobs=True, top_logprobs=50), C.INVALID_ARGUMENT, "top_logprobs"),
    ("inference", "Generate", lambda w: inference_pb2.GenerateRequest(model="served", prompts=[{"chat": {"messages": [{"role": "CHAT_ROLE_USER", "content": " "}]}}]), C.INVALID_ARGUMENT, "prompts[0].chat.messages[0].content"),
    ("inference", "Generate", lambda w: inference_pb2.GenerateRequest(model="served", prompts=[{"text": "hi"}], sampling={"max_new_tokens": 8000}), C.INVALID_ARGUMENT, "sampling.max_new_tokens"),
    ("inference", "LoadModel", lambda w: inference_pb2.LoadModelRequest(name="", model="tiny"), C.INVALID_ARGUMENT, "name"),
    ("inference", "LoadModel", lambda w: inference_pb2.LoadModelRequest(name="x"), C.INVALID_ARGUMENT, "model"),
    ("inference", "LoadModel", lambda w: inference_pb2.LoadModelRequest(name="x", model="nope"), C.NOT_FOUND, "model"),
    ("inference", "LoadModel", lambda w: inference_pb2.LoadModelRequest(name="x", model="tiny", dtype=9), C.INVALID_ARGUMENT, "dtype"),
    ("inference", "LoadModel", lambda w: inference_pb2.LoadModelRequest(name="x", model="tiny", max_model_len=-1), C.INVALID_ARGUMENT, "max_model_len"),
    ("inference", "LoadModel", lambda w: inference_pb2.LoadModelRequest(name="x", model="tiny", backend="onnx"), C.INVALID_ARGUMENT, "backend"),
    ("inference", "LoadModel", lambda w: inference_pb2.LoadModelRequest(name="served", model="tiny"), C.ALREADY_EXISTS, "name"),
    ("inference", "GetServedModel", lambda w: inference_pb2.GetServedModelRequest(name="nope"), C.NOT_FOUND, "name"),
    ("inference", "UnloadModel", lambda w: inference_pb2.UnloadModelRequest(name="nope"), C.NOT_FOUND, "name"),
    ("inference", "LoadAdapter", lambda w: inference_pb2.LoadAdapterRequest(name="a", base="served"), C.INVALID_ARGUMENT, "adapter.uri"),
    ("inference", "LoadAdapter", lambda w: inference_pb2.LoadAdapterRequest(name="", base="served", adapter={"uri": "artifact://adapter/x"}), C.INVALID_ARGUMENT, "name"),
    ("inference", "LoadAdapter", lambda w: inference_pb2.LoadAdapterRequest(name="a", base="nope", adapter={"uri": "artifact://adapter/x"}), C.NOT_FOUND, "base"),
    ("inference", "UnloadAdapter", lambda w: inference_pb2.UnloadAdapterRequest(name="served"), C.FAILED_PRECONDITION, "name"),
    # -- DataService -----------------------------------------------------------------------------
    ("data", "RegisterDataset", lambda w: data_pb2.RegisterDatasetRequest(spec=_spec()), C.INVALID_ARGUMENT, "source_uri"),
    ("data", "RegisterDataset", lambda w: data_pb2.RegisterDatasetRequest(source_uri="/no/such.csv", spec=_spec()), C.NOT_FOUND, "source_uri"),
    ("data", "RegisterDataset", lambda w: data_pb2.RegisterDatasetRequest(source_uri="s3://b/k.csv", spec=_spec()), C.INVALID_ARGUMENT, "source_uri"),
    ("data", "RegisterDataset", lambda w: register(w, format=9), C.INVALID_ARGUMENT, "spec.format"),
    ("data", "RegisterDataset", lambda w: register(w, schema=9), C.INVALID_ARGUMENT, "spec.schema"),
    ("data", "RegisterDataset", lambda w: register(w, template="nope"), C.INVALID_ARGUMENT, "spec.template"),
    ("data", "RegisterDataset", lambda w: register(w, tokenizer_model="nope"), C.NOT_FOUND, "spec.tokenizer_model"),
    ("data", "RegisterDataset", lambda w: register(w, max_seq_length=-1), C.INVALID_ARGUMENT, "spec.max_seq_length"),
    ("data", "RegisterDataset", lambda w: register(w, max_seq_length=10**6), C.INVALID_ARGUMENT, "spec.max_seq_length"),
    ("data", "RegisterDataset", lambda w: register(w, max_train_rows=-1), C.INVALID_ARGUMENT, "spec.max_train_rows"),
    ("data", "RegisterDataset", lambda w: register(w, max_validation_rows=-1), C.INVALID_ARGUMENT, "spec.max_validation_rows"),
    ("data", "RegisterDataset", lambda w: register(w, split={"validation_fraction": 1.5}), C.INVALID_ARGUMENT, "spec.split.validation_fraction"),
    ("data", "RegisterDataset", lambda w: register(w, split={"validation_rows": -2}), C.INVALID_ARGUMENT, "spec.split.validation_rows"),
    ("data", "RegisterDataset", lambda w: register(w, nested_subset_sizes=[0]), C.INVALID_ARGUMENT, "spec.nested_subset_sizes[0]"),
    ("data", "RegisterDataset", lambda w: register(w, label_filter=[""]), C.INVALID_ARGUMENT, "spec.label_filter[0]"),
    ("data", "GetDataset", lambda w: data_pb2.GetDatasetRequest(dataset_id="ds-nope"), C.NOT_FOUND, "dataset_id"),
    ("data", "ListDatasets", lambda w: data_pb2.ListDatasetsRequest(page={"page_size": -1}), C.INVALID_ARGUMENT, "page.page_size"),
    ("data", "PreviewDataset", lambda w: data_pb2.PreviewDatasetRequest(dataset_id=w["dataset"], split="nope"), C.NOT_FOUND, "split"),
    ("data", "PreviewDataset", lambda w: data_pb2.PreviewDatasetRequest(dataset_id=w["dataset"], offset=-1), C.INVALID_ARGUMENT, "offset"),
    ("data", "PreviewDataset", lambda w: data_pb2.PreviewDatasetRequest(dataset_id=w["dataset"], limit=10**6), C.INVALID_ARGUMENT, "limit"),
    ("data", "GetDatasetStatistics", lambda w: data_pb2.GetDatasetStatisticsRequest(dataset_id="nope"), C.NOT_FOUND, "dataset_id"),
    ("data", "DeleteDataset", lambda w: data_pb2.DeleteDatasetRequest(dataset_id="nope"), C.NOT_FOUND, "dataset_id"),
    ("data", "RenderTemplate", lambda w: data_pb2.RenderTemplateRequest(), C.INVALID_ARGUMENT, "rows"),
    ("data", "RenderTemplate", lambda w: data_pb2.RenderTemplateRequest(template="nope", rows=[{"input": "a", "output": "b"}]), C.INVALID_ARGUMENT, "template"),
    ("data", "RenderTemplate", lambda w: data_pb2.RenderTemplateRequest(schema=9, rows=[{"input": "a"}]), C.INVALID_ARGUMENT, "schema"),
    ("data", "RenderTemplate", lambda w: data_pb2.RenderTemplateRequest(rows=[{"input": "a", "output": "b"}, {"input": "c"}]), C.INVALID_ARGUMENT, "rows[1].output"),
    ("data", "RenderTemplate", lambda w: data_pb2.RenderTemplateRequest(rows=[{"input": "a", "output": "b"}], template_options={"nope": "x"}), C.INVALID_ARGUMENT, "template_options.nope"),
    ("data", "RenderTemplate", lambda w: data_pb2.RenderTemplateRequest(rows=[{"input": "a", "output": "b"}], tokenizer_model="nope"), C.NOT_FOUND, "tokenizer_model"),
    ("data", "CreateSyntheticDataJob", lambda w: data_pb2.CreateSyntheticDataJobRequest(), C.INVALID_ARGUMENT, "spec.document_uris"),
    ("data", "GetDataJob", lambda w: common_pb2.GetJobRequest(job_id="j"), C.NOT_FOUND, "job_id"),
    ("data", "CancelDataJob", lambda w: common_pb2.CancelJobRequest(job_id="j"), C.NOT_FOUND, "job_id"),
]


def _id(case) -> str:
    service, rpc, _, code, field = case
    return f"{rpc}-{field or code.name}"


@pytest.mark.parametrize("case", CASES, ids=[f"{i:03d}-{_id(c)}" for i, c in enumerate(CASES)])
def test_bad_field_is_refused_with_its_path_and_storage_unchanged(cluster, world, case):
    service, rpc, make, code, field = case
    before = _snapshot(cluster.runtime.storage)
    with pytest.raises(grpc.RpcError) as err:
        getattr(cluster.stubs[service], rpc)(make(world), timeout=30)
    assert err.value.code() == code, err.value.details()
    fields, reason = _violations(err.value)
    if field is not None:
        assert field in fields, (fields, err.value.details())
        assert err.value.details().startswith(f"{field}: "), err.value.details()
    assert reason, "every error carries an ErrorInfo reason"
    assert _snapshot(cluster.runtime.storage) == before


def test_every_rpc_has_a_case():
    """New RPCs need rows here (or a note why they take no input worth refusing)."""
    from tunesmith.api.data.v1 import data_pb2 as d
    from tunesmith.api.evaluator.v1 import evaluator_pb2 as e
    from tunesmith.api.inference.v1 import inference_pb2 as i
    from tunesmith.api.trainer.v1 import trainer_pb2 as t

    covered = {rpc for _, rpc, *_ in CASES}
    # No input to refuse: GetStatus, ListModels, ListServedModels; streams and UploadDataset are
    # covered by the tests below.
    exempt = {"GetStatus", "ListModels", "StreamTrainingJobEvents", "StreamMergeJobEvents", "StreamEvaluationEvents",
              "StreamDataJobEvents", "StreamModelImportJobEvents", "UploadDataset", "GenerateStream"}
    every = {m for mod in (d, e, i, t) for s in mod.DESCRIPTOR.services_by_name.values() for m in s.methods_by_name}
    assert every - covered - exempt == set()


@pytest.mark.parametrize("rpc,service", [("StreamTrainingJobEvents", "trainer"), ("StreamMergeJobEvents", "trainer"),
                                         ("StreamModelImportJobEvents", "trainer"),
                                         ("StreamEvaluationEvents", "evaluator"), ("StreamDataJobEvents", "data")])
def test_event_streams_of_unknown_jobs_are_not_found(cluster, world, rpc, service):
    with pytest.raises(grpc.RpcError) as err:
        list(getattr(cluster.stubs[service], rpc)(common_pb2.JobEventsRequest(job_id="nope"), timeout=30))
    assert err.value.code() == C.NOT_FOUND
    assert _violations(err.value)[0] == ["job_id"]


@pytest.mark.parametrize("filename,reason", [("a\x00b.csv", "NUL"), ("x" * 252 + ".csv", "over 255 bytes"),
                                             ("dir/x.csv", "a path"), ("..", "reserved"), ("", "empty")])
def test_upload_with_a_bad_filename_is_invalid_argument(cluster, world, filename, reason):
    before = _snapshot(cluster.runtime.storage)

    def messages():
        yield data_pb2.UploadDatasetRequest(header=data_pb2.UploadHeader(filename=filename, spec=_spec()))
        yield data_pb2.UploadDatasetRequest(chunk=world["csv"].read_bytes())
    with pytest.raises(grpc.RpcError) as err:
        cluster.data.UploadDataset(messages(), timeout=30)
    assert err.value.code() == C.INVALID_ARGUMENT, (reason, err.value.details())
    assert _violations(err.value)[0] == ["header.filename"]
    assert _snapshot(cluster.runtime.storage) == before


def test_generate_stream_validates_before_streaming(cluster, world):
    with pytest.raises(grpc.RpcError) as err:
        list(cluster.inference.GenerateStream(gen(temperature=-1), timeout=30))
    assert err.value.code() == C.INVALID_ARGUMENT and _violations(err.value)[0] == ["sampling.temperature"]


def test_several_bad_fields_are_reported_together(cluster, world):
    with pytest.raises(grpc.RpcError) as err:
        cluster.trainer.CreateTrainingJob(hp(world, learning_rate=5, epochs=-1, batch_size=0, max_seq_length=-3), timeout=30)
    fields, reason = _violations(err.value)
    assert reason == "INVALID_ARGUMENT"
    assert set(fields) == {"spec.hyperparameters.learning_rate", "spec.hyperparameters.epochs",
                           "spec.hyperparameters.max_seq_length"}
