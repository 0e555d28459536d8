"""Checkpoints and resume in the training loop, on a tiny real model: a run stopped mid-way and
resumed from its checkpoint follows the uninterrupted run's loss curve; bad checkpoints are
refused with a clear error and change nothing."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from tunesmith.trainer.loop import CheckpointError, TrainingCancelled, train  # noqa: E402
from tunesmith_builtin.peft_lora import LoraMethod  # noqa: E402
from tunesmith_builtin.recipe_sft import SftRecipe  # noqa: E402

from .conftest import make_rows  # noqa: E402

HP = {"epochs": 3, "batch_size": 4, "learning_rate": 5e-3, "seed": 7, "checkpoint_every_steps": 3,
      "num_threads": 1, "device": "cpu", "log_every_steps": 1}
IDENTITY = {"base_model": "tiny", "method": "lora", "recipe": "sft"}


def _run(model_dir, out: Path, *, stop_after: int = 0, resume_from: Path | None = None, identity=IDENTITY,
         method_options=None):
    saved: list[tuple[int, Path]] = []
    events: list[dict] = []

    def sink(folder: Path, step: int) -> None:
        keep = out / f"ckpt-{step}"
        shutil.copytree(folder, keep)
        saved.append((step, keep))

    def should_stop() -> bool:
        steps = [e["step"] for e in events if e["type"] == "progress"]
        return bool(stop_after) and bool(steps) and steps[-1] >= stop_after

    result = train(model_path=model_dir, train_rows=make_rows(40, seed=1), validation_rows=make_rows(8, seed=2),
                   method=LoraMethod(), method_options=method_options or {"rank": 4, "dropout": 0.1},
                   recipe=SftRecipe(), hp=HP, output_dir=out, on_event=events.append, should_stop=should_stop,
                   identity=identity, checkpoint_sink=sink, resume_from=resume_from, resume_source=str(resume_from))
    return result, saved, events


def _curve(events) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in events if e["type"] == "progress"}


def test_a_resumed_run_follows_the_uninterrupted_loss_curve(sft_model_dir, tmp_path):
    full, saved, events = _run(sft_model_dir, tmp_path / "full")
    assert [s for s, _ in saved] == list(range(3, full["steps"], 3))
    reference = _curve(events)

    with pytest.raises(TrainingCancelled):  # SIGTERM-style stop: a checkpoint is written first
        _run(sft_model_dir, tmp_path / "a", stop_after=7)
    stopped = sorted((tmp_path / "a").glob("ckpt-*"), key=lambda p: int(p.name.split("-")[1]))
    last = stopped[-1]
    meta = json.loads((last / "checkpoint.json").read_text())
    assert meta["step"] == 7 and meta["identity"] == IDENTITY

    resumed, _, events_b = _run(sft_model_dir, tmp_path / "b", resume_from=last)
    assert resumed["resumed_from_step"] == 7 and resumed["steps"] == full["steps"]
    curve = _curve(events_b)
    assert min(curve) == 8  # continues after the checkpoint's step, does not redo it
    for step, loss in curve.items():
        assert loss == pytest.approx(reference[step], rel=1e-4, abs=1e-5), step
    assert resumed["final_train_loss"] == pytest.approx(full["final_train_loss"], rel=1e-4)
    # The whole curve (before and after the stop) is carried in the result.
    assert [p[0] for p in resumed["train_loss_curve"]] == list(range(1, full["steps"] + 1))
    assert resumed["best_validation_loss"] == pytest.approx(full["best_validation_loss"], rel=1e-4)


def test_corrupt_and_foreign_checkpoints_are_refused_naming_the_problem(sft_model_dir, tmp_path):
    _, saved, _ = _run(sft_model_dir, tmp_path / "full")
    good = saved[0][1]

    broken = tmp_path / "broken"
    shutil.copytree(good, broken)
    (broken / "trainable.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt"):
        _run(sft_model_dir, tmp_path / "x", resume_from=broken)

    incomplete = tmp_path / "incomplete"
    shutil.copytree(good, incomplete)
    (incomplete / "optimizer.pt").unlink()
    with pytest.raises(CheckpointError, match="optimizer.pt missing"):
        _run(sft_model_dir, tmp_path / "y", resume_from=incomplete)

    with pytest.raises(CheckpointError, match="belongs to another run: base_model"):
        _run(sft_model_dir, tmp_path / "z", resume_from=good, identity={**IDENTITY, "base_model": "other"})

    with pytest.raises(CheckpointError, match="other trainable parameters"):
        _run(sft_model_dir, tmp_path / "w", resume_from=good, identity={}, method_options={"rank": 8})
    # Nothing was written by the refused runs, and the checkpoint itself is unchanged.
    assert not (tmp_path / "x" / "output").exists()
    assert json.loads((good / "checkpoint.json").read_text())["step"] == 3
