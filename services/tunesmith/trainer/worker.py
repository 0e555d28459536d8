"""The training worker: one process per job, started by a training executor.

    python -m tunesmith.trainer.worker --storage ROOT --job JOB_ID

Reads jobs/<id>/worker-input.json (a WorkerInput, written by the trainer service), resolves its
base model, dataset (and checkpoint to resume from) through storage, runs the recipe the input
names in the training loop (tunesmith.trainer.loop), stores the adapter (and merged model), or
the model of a full fine-tune, as artifacts, and writes under jobs/<id>/ the files of
tunesmith.core.formats.worker:
    worker-events.jsonl    WorkerEvent lines (progress, metrics, log, checkpoint), as they happen
    latest-checkpoint.json the newest checkpoint artifact (replaced after each one)
    worker-result.json     on success: WorkerResult (artifact references and training figures)
    worker-error.json      on failure: WorkerError (code, message); the exit code is non-zero
SIGTERM asks the training loop to stop at the next step: it writes a checkpoint, then exits with
code 3 ("cancelled"). Under torchrun (several processes) only rank 0 writes files.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

EXIT_CANCELLED = 3


def run(storage_root: str, job_id: str) -> int:
    from tunesmith.core.formats.worker import WorkerError, WorkerEvent, WorkerInput
    from tunesmith.core.storage import open_storage

    storage = open_storage(storage_root)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    parent = os.getppid()

    def should_stop() -> bool:
        # Cancelled, or the service that started us is gone (then nobody would record our result).
        return stop.is_set() or os.getppid() != parent

    def emit(event: dict) -> None:
        WorkerEvent.from_emitted(event).append(storage, job_id)

    def fail(code: str, message: str, field: str = "") -> int:
        WorkerError(code, message, field=field).write(storage, job_id)
        return 1

    try:
        return _train(storage, WorkerInput.read(storage, job_id), job_id, emit, should_stop)
    except MemoryError as exc:
        return fail("out_of_memory", f"training ran out of memory: {exc}")
    except Exception as exc:  # noqa: BLE001 - reported to the service, which fails the job
        if type(exc).__name__ == "OutOfMemoryError":
            return fail("out_of_memory", f"training ran out of memory: {exc}")
        traceback.print_exc()
        code = getattr(exc, "code", "training_error")
        field = getattr(exc, "field", "") or ""
        if field and not field.startswith("spec."):  # the worker's inputs all come from the job's spec
            field = f"spec.{field}"
        return fail(code if isinstance(code, str) else "training_error", f"{type(exc).__name__}: {exc}", field)


def _train(storage, spec, job_id: str, emit, should_stop) -> int:
    """Train what `spec` (a WorkerInput) asks; write the WorkerResult; the exit code."""
    import os as _os

    from tunesmith.core.formats.adapter import AdapterMeta, finalize_adapter
    from tunesmith.core.formats.dataset import read_prepared
    from tunesmith.core.formats.worker import LatestCheckpoint, WorkerResult
    from tunesmith.core.plugins import get_registry
    from tunesmith.trainer.loop import TrainingCancelled, train

    registry = get_registry()
    method = registry.get("peft_methods", spec.method)
    recipe = registry.get("training_recipes", spec.recipe)
    base_dir = str(storage.resolve(spec.base_model))
    dataset = read_prepared(storage, spec.dataset)
    train_rows = dataset.rows(spec.train_split)
    validation_rows = dataset.rows(spec.validation_split) if spec.validation_split else None
    main = int(_os.environ.get("RANK", "0")) == 0
    if main:
        emit({"type": "log", "level": "info",
              "message": f"{spec.recipe} with {spec.method} on {len(train_rows)} rows "
                         f"(validation: {len(validation_rows or [])})"})

    def store_checkpoint(folder: Path, step: int) -> None:
        art = storage.put_artifact("checkpoint", folder)
        LatestCheckpoint(art.uri, step).write(storage, job_id)
        emit({"type": "checkpoint", "uri": art.uri, "step": step})

    resume_dir = storage.resolve(spec.resume_from) if spec.resume_from else None
    merged = adapter = model = None
    with storage.staging_dir() as tmp:
        try:
            figures = train(model_path=base_dir, train_rows=train_rows, validation_rows=validation_rows,
                            method=method, method_options=spec.method_options, recipe=recipe,
                            recipe_options=_local_models(storage, spec.recipe_options), hp=spec.hyperparameters,
                            output_dir=tmp,
                            on_event=emit, should_stop=should_stop, identity=spec.identity(),
                            checkpoint_sink=store_checkpoint, resume_from=resume_dir,
                            resume_source=spec.resume_from,
                            on_trained=_reference_writer(spec, train_rows, validation_rows, emit))
        except TrainingCancelled:
            if main:
                emit({"type": "log", "level": "info", "message": "cancelled"})
            return EXIT_CANCELLED
        if not main:
            return 0
        training = {k: figures[k] for k in ("steps", "train_seconds", "train_tokens", "final_train_loss",
                                            "best_validation_loss") if figures.get(k) is not None}
        out = Path(figures["output_dir"])
        if method.artifact_kind == "model":
            model = storage.put_artifact("model", out, move=True)
        else:
            finalize_adapter(out, AdapterMeta(base_model_uri=spec.base_model, base_model_name=spec.base_model_name,
                                              method=spec.method, training=training))
            adapter = storage.put_artifact("adapter", out, move=True)
        if spec.merge and adapter is not None:
            if not method.supports_merge:
                emit({"type": "log", "level": "warning", "message": f"{spec.method} adapters cannot be merged; skipped"})
            else:
                from tunesmith.trainer.merge import merge_artifacts

                emit({"type": "progress", "phase": "merge", "step": figures.get("steps", 0)})
                merged = merge_artifacts(storage, spec.base_model, adapter.uri,
                                         dtype=_merge_dtype(spec.hyperparameters.get("dtype")))
    WorkerResult.from_training(figures, adapter=adapter, merged_model=merged, model=model).write(storage, job_id)
    return 0


def _reference_writer(spec, train_rows, validation_rows, emit):
    """None without spec.serve_check; else on_trained for the loop: the serve reference of the
    trained model on held-out prompts, written into the output folder (so it is stored with the
    adapter, or the model)."""
    if not spec.serve_check:
        return None

    def write(model, tokenizer, out: Path) -> None:
        from tunesmith.trainer.reference import (DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPTS, greedy_reference,
                                                 held_out_prompts)

        n = int(spec.serve_check.get("prompts") or DEFAULT_PROMPTS)
        prompts = held_out_prompts(validation_rows, train_rows, n)
        reference = greedy_reference(model, tokenizer, prompts,
                                     int(spec.serve_check.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS))
        reference.write(out)
        stopped = sum(1 for s in reference.samples if s.finish_reason == "stop")
        emit({"type": "log", "level": "info",
              "message": f"serve reference: greedy answers in peft on {len(reference.samples)} held-out prompts "
                         f"({'validation' if validation_rows else 'training'} split; {stopped} ended by EOS)"})

    return write


def _local_models(storage, options: dict) -> dict:
    """Recipe options with model artifact URIs (DPO's reference_model) made local folders."""
    out = dict(options)
    ref = out.get("reference_model")
    if isinstance(ref, str) and ref.startswith("artifact://"):
        out["reference_model"] = str(storage.resolve(ref))
    return out


def _merge_dtype(training_dtype: str | None) -> str:
    """The merged model's dtype: the training dtype when it names one, else float32 ("auto")."""
    from tunesmith.core.dtypes import NAMES

    return training_dtype if training_dtype in NAMES else "float32"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tunesmith.trainer.worker")
    parser.add_argument("--storage", required=True)
    parser.add_argument("--job", required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return run(args.storage, args.job)


if __name__ == "__main__":
    sys.exit(main())
