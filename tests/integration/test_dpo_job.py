"""A DPO training job through the real services: a preference JSONL registered with the data
service, CreateTrainingJob with OBJECTIVE_DPO, validation events with the reward metrics, and
the final metrics on the job."""
from __future__ import annotations

import json
import random

import grpc
import pytest

from tunesmith.api.common.v1 import common_pb2
from tunesmith.api.data.v1 import data_pb2
from tunesmith.api.trainer.v1 import trainer_pb2

from .conftest import banking_rows, import_model, wait_job

INTENTS = ["card_arrival", "age_limit", "change_pin", "exchange_rate"]


def _pairs(path, source, per_intent, seed):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for r in banking_rows(INTENTS, per_intent, source=source):
            wrong = rng.choice([i for i in INTENTS if i != r["category"]])
            f.write(json.dumps({"prompt": f"Message: {r['text']}\nIntent:", "chosen": f" {r['category']}",
                                "rejected": f" {wrong}"}) + "\n")
    return path


def test_dpo_job_on_preference_pairs_reports_rewards(cluster, tiny_model_dir, tmp_path):
    import_model(cluster, "tiny-dpo", tiny_model_dir)
    spec = data_pb2.DatasetSpec(schema=data_pb2.SCHEMA_PREFERENCE, split=data_pb2.SplitSpec(validation_rows=8, seed=1))
    ds = cluster.data.RegisterDataset(data_pb2.RegisterDatasetRequest(
        source_uri=str(_pairs(tmp_path / "pairs.jsonl", "train.csv", 10, 0)), spec=spec), timeout=60).dataset
    sft_only = cluster.data.RegisterDataset(data_pb2.RegisterDatasetRequest(
        source_uri=str(tmp_path / "pairs.jsonl"), spec=data_pb2.DatasetSpec(
            schema=data_pb2.SCHEMA_PROMPT_COMPLETION, column_mapping={"completion": "chosen"})), timeout=60).dataset

    with pytest.raises(grpc.RpcError) as err:  # DPO needs rejected answers: refused up front
        cluster.trainer.CreateTrainingJob(trainer_pb2.CreateTrainingJobRequest(spec=trainer_pb2.TrainingJobSpec(
            base_model="tiny-dpo", dataset_id=sft_only.id, objective=trainer_pb2.OBJECTIVE_DPO)), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "rejected" in err.value.details()

    job = cluster.trainer.CreateTrainingJob(trainer_pb2.CreateTrainingJobRequest(spec=trainer_pb2.TrainingJobSpec(
        base_model="tiny-dpo", dataset_id=ds.id, objective=trainer_pb2.OBJECTIVE_DPO,
        dpo=trainer_pb2.DpoConfig(beta=1.0),
        method=trainer_pb2.MethodSpec(lora=trainer_pb2.LoraConfig(rank=8)),
        hyperparameters=trainer_pb2.Hyperparameters(epochs=4, batch_size=4, learning_rate=5e-3,
                                                    eval_every_steps=4))), timeout=30)
    assert job.spec.recipe == "dpo"
    done = wait_job(cluster.trainer.GetTrainingJob, job.job.id, timeout=300)
    assert done.job.state == common_pb2.JOB_STATE_SUCCEEDED, done.job.error
    metrics = [e.metrics for e in cluster.trainer.StreamTrainingJobEvents(
        common_pb2.JobEventsRequest(job_id=job.job.id), timeout=30) if e.WhichOneof("payload") == "metrics"]
    validation = [m.values for m in metrics if m.name == "validation"]
    assert validation and {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"} <= set(validation[-1])
    assert done.result.final_metrics["rewards/accuracies"] >= 0.75
    assert done.result.final_metrics["rewards/margins"] > 0
    assert [p.step for p in done.curves.validation_loss] == [int(v["step"]) for v in validation]
