"""A storage root copied to another path, with the original deleted, still resolves every
artifact: dataset records -> prepared rows, model-store entries -> model folders, a trained
adapter -> stock peft loading with the same logits; every stored reference verifies."""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from tunesmith.core.formats.adapter import base_reference, read_adapter  # noqa: E402
from tunesmith.core.formats.dataset import DatasetRecords, read_prepared  # noqa: E402
from tunesmith.core.formats.worker import WorkerInput, WorkerResult  # noqa: E402
from tunesmith.core.models import ModelStore  # noqa: E402
from tunesmith.core.storage import Artifact, LocalStorage  # noqa: E402

JOB = "train-relocate"
IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7]])
INTENTS = {"card_arrival": ["when will my card arrive", "my card has not come yet", "card delivery is late"],
           "change_pin": ["how do I change my PIN", "I want a new PIN", "reset my PIN please"]}


def logits(base_dir, adapter_dir=None):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(adapter_dir))  # stock peft, nothing of ours
    with torch.no_grad():
        return model.eval()(input_ids=IDS).logits


def register_dataset(storage, tmp: Path):
    """Through the data service's own RegisterDataset, so the record is what it really writes."""
    from tunesmith.api.data.v1 import data_pb2
    from tunesmith.core.plugins import get_registry
    from tunesmith.core.runtime import Runtime
    from tunesmith.data.service import DataServicer

    path = tmp / "intents.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "category"])
        for label, texts in INTENTS.items():
            for i, text in enumerate(texts * 3):
                w.writerow([f"{text} {i}", label])
    spec = data_pb2.DatasetSpec(schema=data_pb2.SCHEMA_CLASSIFICATION,
                                column_mapping={"input": "text", "output": "category"},
                                split=data_pb2.SplitSpec(validation_fraction=0.25, seed=0))
    request = data_pb2.RegisterDatasetRequest(source_uri=str(path), spec=spec)
    return DataServicer(Runtime(storage, get_registry())).RegisterDataset(request, None).dataset.id


@pytest.fixture(scope="module")
def copied(tmp_path_factory, tiny_model_dir):
    """Build a root (dataset, model, trained + merged adapter), record what it gives, copy it,
    delete the original; return (copy root, what the original gave)."""
    tmp = tmp_path_factory.mktemp("relocate")
    root = tmp / "original"
    storage = LocalStorage(root)
    dataset_id = register_dataset(storage, tmp)
    entry = ModelStore(storage).register("tiny", tiny_model_dir)
    ds = DatasetRecords(storage).get(dataset_id)
    WorkerInput(base_model=entry.artifact.uri, base_model_name="tiny", dataset=ds.artifact.uri,
                validation_split="validation", method="lora",
                method_options={"rank": 4, "alpha": 8, "target_modules": "all-linear"},
                hyperparameters={"epochs": 1, "max_steps": 3, "batch_size": 4, "learning_rate": 1e-2, "seed": 0,
                                 "num_threads": 1},
                merge=True).write(storage, JOB)
    done = subprocess.run([sys.executable, "-m", "tunesmith.trainer.worker", "--storage", str(root), "--job", JOB],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = WorkerResult.read(storage, JOB)
    prepared = read_prepared(storage, ds.artifact.uri)
    before = {
        "dataset_id": dataset_id,
        "rows": {s: prepared.rows(s) for s in prepared.split_names},
        "result": result,
        "base_logits": logits(ModelStore(storage).local_path("tiny")),
        "adapter_logits": logits(ModelStore(storage).local_path("tiny"), storage.resolve(result.adapter.uri)),
    }
    copy = tmp / "elsewhere" / "copied-root"
    shutil.copytree(root, copy, symlinks=True)
    shutil.rmtree(root)  # nothing may resolve into the original any more
    return copy, str(root), before


def test_the_adapter_really_changes_the_model(copied):
    _, _, before = copied
    assert not torch.allclose(before["base_logits"], before["adapter_logits"], atol=1e-4)


def test_dataset_records_resolve_to_the_same_rows(copied):
    copy, _, before = copied
    storage = LocalStorage(copy)
    records = DatasetRecords(storage)
    assert [r.id for r in records.list()] == [before["dataset_id"]]
    rec = records.get(before["dataset_id"])
    assert rec.artifact.uri == f"artifact://dataset/{rec.artifact.sha256}" and storage.verify(rec.artifact)
    prepared = read_prepared(storage, rec.artifact.uri)
    assert prepared.folder.is_relative_to(storage.root)
    assert {s: prepared.rows(s) for s in prepared.split_names} == before["rows"]
    assert rec.split_rows() == {s: len(r) for s, r in before["rows"].items()}


def test_model_store_entries_resolve_to_model_folders(copied):
    copy, _, _ = copied
    storage = LocalStorage(copy)
    store = ModelStore(storage)
    entry = store.get("tiny")
    folder = Path(store.local_path("tiny"))
    assert folder.is_relative_to(storage.root) and (folder / "config.json").is_file()
    assert storage.verify(entry.artifact)


def test_the_adapter_loads_with_stock_peft_and_gives_the_same_logits(copied):
    copy, _, before = copied
    storage = LocalStorage(copy)
    result = WorkerResult.read(storage, JOB)
    assert result == before["result"]
    adapter_dir = storage.resolve(result.adapter.uri)
    meta = read_adapter(adapter_dir)
    assert meta.base_model_name == "tiny" and meta.method == "lora"
    base_dir = ModelStore(storage).local_path(base_reference(adapter_dir))  # artifact://model/... in the copy
    assert Path(base_dir).is_relative_to(storage.root)
    assert torch.allclose(logits(base_dir, adapter_dir), before["adapter_logits"], atol=1e-6)
    merged_dir = storage.resolve(result.merged_model.uri)
    assert torch.allclose(logits(merged_dir), before["adapter_logits"], atol=1e-4)


def test_every_stored_reference_verifies_and_none_holds_the_old_root(copied):
    copy, old_root, _ = copied
    storage = LocalStorage(copy)
    refs = storage.list_artifacts()
    assert {a.kind for a in refs} == {"dataset", "dataset-source", "model", "adapter", "checkpoint"}
    result = WorkerResult.read(storage, JOB)
    rec = DatasetRecords(storage).list()[0]
    refs += [result.adapter, result.merged_model, rec.artifact, ModelStore(storage).get("tiny").artifact]
    for ref in refs:
        assert isinstance(ref, Artifact) and ref.uri == f"artifact://{ref.kind}/{ref.sha256}", ref
        assert storage.verify(ref), ref.uri
    # References (records, model entries, worker input/result) and the artifacts themselves
    # never name a location in the root that wrote them.
    referencing = [*storage.root.glob("records/**/*.json"), *storage.root.glob("models/*.json"),
                   *storage.root.glob("jobs/*/worker-input.json"), *storage.root.glob("jobs/*/worker-result.json"),
                   *(p for p in storage.root.glob("artifacts/**/*") if p.is_file())]
    assert len(referencing) > 10
    offending = [str(p.relative_to(storage.root)) for p in referencing if old_root.encode() in p.read_bytes()]
    assert offending == []
