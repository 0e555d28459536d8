"""`tunesmith demo --json` end to end in real processes, scaled down to a tiny model."""
import json
import os
import subprocess
import sys
from pathlib import Path

from .test_up import free_base_port

KEYS = {"base_accuracy", "tuned_accuracy", "train_rows", "eval_rows", "train_seconds",
        "train_tokens_per_second", "total_seconds"}


def test_demo_json_summary(tmp_path, tiny_model_dir):
    env = {**os.environ, "TUNESMITH_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    cli = [sys.executable, "-m", "tunesmith.cli.main"]
    subprocess.run(cli + ["models", "register", "--name", "tiny", "--path", str(tiny_model_dir)],
                   env=env, check=True, capture_output=True)
    done = subprocess.run(cli + ["demo", "--json", "--base-model", "tiny", "--base-port", str(free_base_port()),
                                 "--intents", "3", "--train-rows", "30", "--eval-rows", "12", "--epochs", "1",
                                 "--no-serve"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)  # stdout holds only the JSON object
    assert KEYS <= set(summary)
    assert summary["train_rows"] == 30 and summary["eval_rows"] == 12
    assert 0.0 <= summary["base_accuracy"] <= 1.0 and 0.0 <= summary["tuned_accuracy"] <= 1.0
    assert summary["train_seconds"] > 0 and summary["train_tokens_per_second"] > 0
    assert summary["total_seconds"] >= summary["train_seconds"]
    assert len(summary["samples"]) == 5 and all({"message", "expected", "base", "tuned"} <= set(s) for s in summary["samples"])
    from tunesmith.core.storage import LocalStorage

    for uri in summary["artifacts"].values():  # storage-relative URIs of artifacts in this storage
        assert uri.startswith("artifact://") and LocalStorage(tmp_path).resolve(uri).is_dir()
    # the evaluation also reports the regression gate, the error analysis and the HTML report
    assert {c["suite"] for c in summary["gate"]["checks"]} >= {"general_mc", "general_text"}
    assert summary["gate"]["passed"] == all(c["passed"] for c in summary["gate"]["checks"])
    assert set(summary["errors"]) == {"base", "tuned"} and "empty_answer" in summary["errors"]["base"]
    html = Path(summary["html_report"])
    assert html.is_file() and html.read_text().count("<svg") >= 2
