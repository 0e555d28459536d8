"""A worker that fails on an input reports the input's proto field path, so the job's error
names it (for what CreateTrainingJob could not have known, or a worker input written by hand)."""
from __future__ import annotations

import signal

import pytest

pytest.importorskip("torch")

from tunesmith.core.formats.dataset import DatasetRecords  # noqa: E402
from tunesmith.core.formats.worker import WorkerError, WorkerInput  # noqa: E402
from tunesmith.core.models import ModelStore  # noqa: E402
from tunesmith.core.storage import LocalStorage  # noqa: E402
from tunesmith.trainer.worker import run  # noqa: E402

from .test_storage_relocation import register_dataset  # noqa: E402


def test_a_bad_hyperparameter_in_the_worker_names_its_spec_path(tmp_path, tiny_model_dir):
    storage = LocalStorage(tmp_path / "root")
    ds = DatasetRecords(storage).get(register_dataset(storage, tmp_path))
    entry = ModelStore(storage).register("tiny", tiny_model_dir)
    WorkerInput(base_model=entry.artifact.uri, base_model_name="tiny", dataset=ds.artifact.uri,
                hyperparameters={"max_seq_length": 1}).write(storage, "train-bad")
    previous = signal.getsignal(signal.SIGTERM)  # run() installs the worker's SIGTERM handler
    try:
        assert run(str(storage.root), "train-bad") == 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    err = WorkerError.read(storage, "train-bad")
    assert err.field == "spec.hyperparameters.max_seq_length" and "max_seq_length" in err.message
