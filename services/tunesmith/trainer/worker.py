"""The training worker: one process per job, started by a training executor.

    python -m tunesmith.trainer.worker --storage ROOT --job JOB_ID

Reads jobs/<id>/worker-input.json (written by the trainer service), trains, stores the adapter
(and merged model) as artifacts, and writes, all under jobs/<id>/:
    worker-events.jsonl   one JSON event per line (progress, metrics, log), as they happen
    worker-result.json    on success: artifact references and training figures
    worker-error.json     on failure: {"code", "message"}; the exit code is non-zero
SIGTERM asks the training loop to stop at the next step (exit code 3, "cancelled").
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

EXIT_CANCELLED = 3


def run(storage_root: str, job_id: str) -> int:
    from tunesmith.core.plugins import get_registry
    from tunesmith.core.storage import open_storage

    storage = open_storage(storage_root)
    base = f"jobs/{job_id}"
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    parent = os.getppid()

    def should_stop() -> bool:
        # Cancelled, or the service that started us is gone (then nobody would record our result).
        return stop.is_set() or os.getppid() != parent

    def emit(event: dict) -> None:
        storage.append_line(f"{base}/worker-events.jsonl", json.dumps({"time": time.time(), **event}))

    def fail(code: str, message: str) -> int:
        storage.write_json(f"{base}/worker-error.json", {"code": code, "message": message})
        return 1

    try:
        spec = storage.read_json(f"{base}/worker-input.json")
        from tunesmith.data.prepare import read_split
        from tunesmith.trainer.sft import TrainingCancelled, train_sft

        method = get_registry().get("peft_methods", spec["method"])
        dataset_dir = Path(spec["dataset_dir"])
        train_rows = read_split(dataset_dir, spec["train_split"])
        validation_rows = read_split(dataset_dir, spec["validation_split"]) if spec.get("validation_split") else None
        emit({"type": "log", "level": "info",
              "message": f"training {spec['method']} on {len(train_rows)} rows (validation: {len(validation_rows or [])})"})
        with storage.staging_dir() as tmp:
            try:
                result = train_sft(model_path=spec["model_path"], train_rows=train_rows, validation_rows=validation_rows,
                                   method=method, method_options=spec["method_options"], hp=spec["hyperparameters"],
                                   output_dir=tmp, on_event=emit, should_stop=should_stop)
            except TrainingCancelled:
                emit({"type": "log", "level": "info", "message": "cancelled"})
                return EXIT_CANCELLED
            adapter = storage.put_artifact("adapter", result["adapter_dir"], move=True)
            result["adapter"] = adapter.to_dict()
            if spec.get("merge"):
                if not method.supports_merge:
                    emit({"type": "log", "level": "warning", "message": f"{spec['method']} adapters cannot be merged; skipped"})
                else:
                    from tunesmith.trainer.merge import merge_adapter

                    emit({"type": "progress", "phase": "merge", "step": result.get("steps", 0)})
                    merged_dir = merge_adapter(spec["model_path"], storage.local_path(adapter.uri), tmp / "merged",
                                               dtype=spec["hyperparameters"].get("dtype") or "float32")
                    result["merged_model"] = storage.put_artifact("model", merged_dir, move=True).to_dict()
        result.pop("adapter_dir", None)
        storage.write_json(f"{base}/worker-result.json", result)
        return 0
    except MemoryError as exc:
        return fail("out_of_memory", f"training ran out of memory: {exc}")
    except Exception as exc:  # noqa: BLE001 - reported to the service, which fails the job
        if type(exc).__name__ == "OutOfMemoryError":
            return fail("out_of_memory", f"training ran out of memory: {exc}")
        traceback.print_exc()
        code = getattr(exc, "code", "training_error")
        return fail(code if isinstance(code, str) else "training_error", f"{type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tunesmith.trainer.worker")
    parser.add_argument("--storage", required=True)
    parser.add_argument("--job", required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return run(args.storage, args.job)


if __name__ == "__main__":
    sys.exit(main())
