"""`tunesmith demo`: fine-tune the bundled SmolLM2-135M-Instruct to route BANKING77 messages.

Every step goes through the four gRPC services (started here unless already running):
register data -> LoRA SFT (live progress) -> evaluate base vs tuned -> serve the merged model
with the inference service (vLLM where installed) and stream an answer.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

INTENTS = ["card_arrival", "lost_or_stolen_phone", "age_limit", "change_pin", "exchange_rate",
           "terminate_account", "transfer_timing", "top_up_limits", "country_support", "edit_personal_details"]
INSTRUCTION = "Route this banking customer message to its intent."
BASE_MODEL = "smollm2-135m-instruct"


def _intents(examples: Path, n: int) -> list[str]:
    """The demo's 10 intents first, then the other BANKING77 intents in name order, n in all."""
    import csv

    with open(examples / "train.csv", newline="") as f:
        every = sorted({row["category"] for row in csv.DictReader(f)})
    return (INTENTS + [i for i in every if i not in INTENTS])[:n]


def _examples_dir() -> Path:
    """examples/banking77 in a checkout (the demo data ships with the repo)."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "examples" / "banking77"
        if (candidate / "train.csv").is_file():
            return candidate
    raise SystemExit("examples/banking77 not found: run the demo from a Tunesmith checkout")


class Console:
    """Human output on stderr when --json is given, so stdout holds only the JSON object."""

    def __init__(self, as_json: bool):
        from rich.console import Console as RichConsole

        self.rich = RichConsole(stderr=as_json)

    def step(self, text: str) -> None:
        self.rich.print(f"[bold cyan]>>[/] {text}")

    def info(self, text: str) -> None:
        self.rich.print(f"   {text}")


def _ensure_services(console: Console, storage: str | None, base_port: int = 0):
    from tunesmith.cli.servers import LocalCluster, wait_healthy
    from tunesmith.core.server import DEFAULT_PORTS

    ports = {s: base_port + i for i, s in enumerate(DEFAULT_PORTS)} if base_port else dict(DEFAULT_PORTS)
    addresses = {s: f"localhost:{p}" for s, p in ports.items()}
    if all(wait_healthy(a, s, 1.0) for s, a in addresses.items()):
        console.step("using the services already running on " + ", ".join(addresses.values()))
        return None, addresses
    from tunesmith.core.storage import default_root

    log_dir = Path(storage or default_root()) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    console.step(f"starting the four services on localhost (logs in {log_dir})")
    cluster = LocalCluster(ports=ports, storage=storage, log_dir=str(log_dir)).start(timeout=180)
    return cluster, cluster.addresses


def run_demo(args) -> int:
    from tunesmith.api.common.v1 import common_pb2
    from tunesmith.api.data.v1 import data_pb2
    from tunesmith.api.evaluator.v1 import evaluator_pb2
    from tunesmith.api.trainer.v1 import trainer_pb2
    from tunesmith.client import Tunesmith

    t0 = time.perf_counter()
    console = Console(args.json)
    storage = args.storage or os.environ.get("TUNESMITH_HOME")
    examples = _examples_dir()
    cluster, addresses = _ensure_services(console, storage, args.base_port)
    try:
        ts = Tunesmith(**addresses)  # the SDK, exactly as a user's script would call the services
        intents = _intents(examples, args.intents)

        # 1. Data -------------------------------------------------------------------------
        console.step(f"registering BANKING77 ({len(intents)} intents) with the data service")
        options = {"instruction": INSTRUCTION}
        common = dict(schema=data_pb2.SCHEMA_CLASSIFICATION, column_mapping={"input": "text", "output": "category"},
                      template="classification", label_filter=intents)
        train_spec = data_pb2.DatasetSpec(name="banking77-train", max_train_rows=args.train_rows,
                                          max_validation_rows=max(args.train_rows // 10, 2),
                                          split=data_pb2.SplitSpec(validation_fraction=0.1, seed=7, stratify=True),
                                          **common)
        train_spec.template_options.update(options)
        train = ts.data.register_dataset(str(examples / "train.csv"), train_spec).dataset
        test_spec = data_pb2.DatasetSpec(name="banking77-test", max_validation_rows=args.eval_rows,
                                         split=data_pb2.SplitSpec(validation_fraction=1.0, seed=7, stratify=True),
                                         **common)
        test_spec.template_options.update(options)
        test = ts.data.register_dataset(str(examples / "test.csv"), test_spec).dataset
        rows = {(d.name, s.name): s.rows for d in (train, test) for s in d.splits}
        train_rows = rows[("banking77-train", "train")]
        eval_rows = rows[("banking77-test", "validation")]
        console.info(f"train {train_rows} rows, validation {rows.get(('banking77-train', 'validation'), 0)} rows, "
                     f"held-out test {eval_rows} rows  (dataset {train.id}, {test.id})")

        # 2. Train ------------------------------------------------------------------------
        console.step(f"LoRA SFT (r={args.rank}, all linear layers, completion-only loss"
                     + (", packed rows" if args.packing else "") + ") on the trainer service")
        job = ts.trainer.create_job(trainer_pb2.TrainingJobSpec(
            base_model=args.base_model, dataset_id=train.id, train_split="train", validation_split="validation",
            method=trainer_pb2.MethodSpec(name="lora", lora=trainer_pb2.LoraConfig(rank=args.rank, alpha=2 * args.rank,
                                                                                target_modules=["all-linear"])),
            hyperparameters=trainer_pb2.Hyperparameters(epochs=args.epochs, batch_size=8, learning_rate=5e-4,
                                                        warmup_ratio=0.05, seed=7, max_seq_length=256,
                                                        packing=args.packing),
            merge=True))
        job_id = job.job.id
        _follow_training(console, ts.trainer, job_id)
        job = ts.trainer.get_job(job_id)
        if job.job.state != common_pb2.JOB_STATE_SUCCEEDED:
            console.rich.print(f"[red]training failed[/]: {job.job.error.code}: {job.job.error.message}")
            return 1
        result = job.result
        console.info(f"trained {result.steps} steps in {result.train_seconds:.0f} s, "
                     f"{result.tokens_per_second:.0f} tokens/s, loss {result.first_train_loss:.3f} -> "
                     f"{result.final_train_loss:.3f}")

        # 3. Evaluate ---------------------------------------------------------------------
        console.step(f"evaluating base vs tuned on {eval_rows} held-out rows (exact match, accuracy, macro-F1; "
                     "error analysis; regression gate on the general-ability suites; HTML report)")
        ev = ts.evaluator.create_evaluation(evaluator_pb2.EvaluationSpec(
            dataset_id=test.id, split="validation", benchmarks=["exact_match", "macro_f1"], baseline="base",
            models=[evaluator_pb2.ModelUnderTest(label="base", model=args.base_model),
                    evaluator_pb2.ModelUnderTest(label="tuned", model=result.merged_model.uri, training_job_id=job_id)],
            # max_new_tokens 0: the evaluator sizes it from the longest label, in tokens
            generation=evaluator_pb2.GenerationConfig(batch_size=50, stop=["\n"]),
            error_analysis=True, html_report=True, gate=evaluator_pb2.RegressionGate(enabled=True),
            keep_samples=eval_rows))
        _follow_evaluation(console, ts.evaluator, ev.job.id)
        ev = ts.evaluator.get_evaluation(ev.job.id)
        if ev.job.state != common_pb2.JOB_STATE_SUCCEEDED:
            console.rich.print(f"[red]evaluation failed[/]: {ev.job.error.message}")
            return 1
        acc = {s.label: next(m.value for m in s.metrics if m.metric == "exact_match") for s in ev.report.scores}
        macro_f1 = {s.label: next((m.value for m in s.metrics if m.metric == "macro_f1"), 0.0) for s in ev.report.scores}
        ci = {s.label: next((m.ci_low, m.ci_high) for m in s.metrics if m.metric == "exact_match") for s in ev.report.scores}

        # 4. Serve ------------------------------------------------------------------------
        served_info = {}
        if not args.no_serve:
            console.step("serving the merged model with the inference service")
            served = ts.inference.load_model("banking77-router", result.merged_model.uri)
            try:
                console.info(f"backend: {served.backend} ({served.backend_reason})")
                sample = ev.report.samples[0]
                text = ""
                for delta in ts.inference.stream("banking77-router", sample.prompt, max_new_tokens=12,
                                                 stop=["\n"], timeout=300):
                    text += delta
            finally:
                ts.inference.unload_model("banking77-router", timeout=120)
            console.info(f"streamed answer for {sample.prompt.splitlines()[1]!r}: {text.strip()!r}")
            served_info = {"backend": served.backend, "backend_reason": served.backend_reason,
                           "streamed_answer": text.strip()}

        total = time.perf_counter() - t0
        samples = [{"message": s.prompt.split("Message: ", 1)[-1].rsplit("\nIntent:", 1)[0], "expected": s.reference,
                    "base": s.outputs["base"].strip(), "tuned": s.outputs["tuned"].strip()}
                   for s in _pick_samples(ev.report.samples)]
        summary = {
            "base_accuracy": acc.get("base", 0.0), "tuned_accuracy": acc.get("tuned", 0.0),
            "base_accuracy_ci95": list(ci.get("base", (0, 0))), "tuned_accuracy_ci95": list(ci.get("tuned", (0, 0))),
            "p_value": next((c.p_value for c in ev.report.comparisons), 1.0),
            "base_macro_f1": macro_f1.get("base", 0.0), "tuned_macro_f1": macro_f1.get("tuned", 0.0),
            "gate": {"passed": ev.report.gate.passed,
                     "checks": [{"suite": c.suite or "task", "metric": c.metric, "base": round(c.baseline_value, 4),
                                 "tuned": round(c.candidate_value, 4), "p_value": c.p_value, "passed": c.passed}
                                for c in ev.report.gate.checks]},
            "errors": {label: {k: int(v) for k, v in sorted(m.values.items())}
                       for label, m in sorted(ev.report.error_analysis.items())},
            "confusions": [{"expected": c.reference, "answered": c.prediction, "count": c.count}
                           for c in ev.report.confusions if c.label == "tuned"][:5],
            "train_rows": train_rows, "eval_rows": eval_rows, "intents": intents,
            "train_seconds": round(result.train_seconds, 1), "train_tokens_per_second": round(result.tokens_per_second, 1),
            "train_steps": result.steps, "first_train_loss": round(result.first_train_loss, 4),
            "final_train_loss": round(result.final_train_loss, 4),
            "best_validation_loss": round(result.best_validation_loss, 4),
            "total_seconds": round(total, 1), "training_job_id": job_id, "evaluation_id": ev.job.id,
            "artifacts": {"adapter": result.adapter.uri, "merged_model": result.merged_model.uri,
                          "report": ev.report_artifact.uri},
            "html_report": _html_path(ts, ev),
            "storage_root": ts.trainer.status().info.get("storage", ""),
            "serving": served_info, "samples": samples,
        }
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            _print_summary(console, summary)
        return 0
    finally:
        if "ts" in locals():
            ts.close()
        if cluster is not None:
            cluster.stop()


def _html_path(ts, ev) -> str:
    """The HTML report's file under the storage root (the evaluator writes it into the report
    artifact's folder)."""
    if not ev.report.html_report.uri:
        return ""
    from tunesmith.core.formats.report import HTML_FILE

    root = ts.evaluator.status().info.get("storage", "").removeprefix("file://")
    kind_and_hash = ev.report.html_report.uri.removeprefix("artifact://")
    return f"{root}/artifacts/{kind_and_hash}/{HTML_FILE}"


def _pick_samples(samples, n: int = 5):
    """Five held-out rows, preferring ones where base and tuned differ (the interesting ones)."""
    differing = [s for s in samples if s.outputs["base"].strip() != s.outputs["tuned"].strip()]
    return (differing + [s for s in samples if s not in differing])[:n]


def _follow_training(console: Console, trainer, job_id: str) -> None:
    from rich.progress import BarColumn, Progress, TextColumn
    from tunesmith.api.common.v1 import common_pb2

    with Progress(TextColumn("   training"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                  TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
                  TextColumn("ETA {task.fields[eta]}"), console=console.rich, transient=False) as bar:
        task = bar.add_task("train", total=None, loss="-", tps="-", eta="-")
        for ev in trainer.events(job_id):
            kind = ev.WhichOneof("payload")
            if kind == "progress" and ev.progress.phase == "train":
                p = ev.progress
                bar.update(task, total=p.total_steps or None, completed=p.step, loss=f"{p.loss:.3f}",
                           tps=f"{p.tokens_per_second:.0f}", eta=f"{p.eta_seconds:.0f}s")
            elif kind == "state_change":
                state = common_pb2.JobState.Name(ev.state_change.state).removeprefix("JOB_STATE_").lower()
                bar.console.print(f"   job {job_id}: {state}" +
                                  (f" ({ev.state_change.error.message})" if ev.state_change.error.message else ""))
            elif kind == "metrics" and ev.metrics.name == "validation":
                bar.console.print(f"   validation loss {ev.metrics.values.get('loss', 0):.4f} "
                                  f"at step {int(ev.metrics.values.get('step', 0))}")


def _follow_evaluation(console: Console, evaluator, eval_id: str) -> None:
    from rich.progress import BarColumn, Progress, TextColumn

    with Progress(TextColumn("   {task.fields[phase]}"), BarColumn(), TextColumn("{task.completed}/{task.total} rows"),
                  console=console.rich) as bar:
        task = bar.add_task("eval", total=None, phase="evaluating")
        for ev in evaluator.events(eval_id):
            if ev.WhichOneof("payload") == "progress":
                p = ev.progress
                bar.update(task, total=p.total_steps, completed=p.step, phase=p.phase)


def _print_summary(console: Console, s: dict) -> None:
    from rich.table import Table

    r = console.rich
    r.rule("[bold]Tunesmith demo: BANKING77 routing")
    r.print(f"base accuracy  [bold]{s['base_accuracy']:.1%}[/]  (95% CI {s['base_accuracy_ci95'][0]:.1%}-{s['base_accuracy_ci95'][1]:.1%})")
    r.print(f"tuned accuracy [bold green]{s['tuned_accuracy']:.1%}[/]  (95% CI {s['tuned_accuracy_ci95'][0]:.1%}-{s['tuned_accuracy_ci95'][1]:.1%}), "
            f"McNemar p = {s['p_value']:.2g}")
    r.print(f"macro-F1: base {s['base_macro_f1']:.3f}, tuned {s['tuned_macro_f1']:.3f}")
    gate = s["gate"]
    r.print("regression gate (general-ability suites): " + ("[green]passed[/]" if gate["passed"] else "[red]FAILED[/]"))
    for c in gate["checks"]:
        r.print(f"  {c['suite']:<13} {c['metric']:<34} base {c['base']:.4g} -> tuned {c['tuned']:.4g}  "
                f"p = {c['p_value']:.2g}  {'ok' if c['passed'] else 'FAILED'}")
    for label, counts in s["errors"].items():
        found = ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "none"
        r.print(f"error analysis, {label}: {found}")
    if s["confusions"]:
        r.print("most confused (tuned): " + "; ".join(f"{c['expected']} -> {c['answered']} ({c['count']})"
                                                       for c in s["confusions"]))
    r.print(f"rows: {s['train_rows']} training, {s['eval_rows']} held-out; {len(s['intents'])} intents")
    r.print(f"training: {s['train_seconds']:.0f} s, {s['train_tokens_per_second']:.0f} tokens/s, "
            f"{s['train_steps']} steps, loss {s['first_train_loss']:.3f} -> {s['final_train_loss']:.3f}")
    if s["serving"]:
        r.print(f"served by: {s['serving']['backend']} ({s['serving']['backend_reason']})")
    table = Table(title="five held-out messages")
    for col in ("message", "expected", "base", "tuned"):
        table.add_column(col, overflow="fold")
    for row in s["samples"]:
        table.add_row(row["message"], row["expected"], row["base"] or "(empty)", row["tuned"])
    r.print(table)
    r.print(f"artifacts (artifact://<kind>/<sha256> is the folder artifacts/<kind>/<sha256> of the storage "
            f"root {s['storage_root']}):")
    for name, uri in s["artifacts"].items():
        r.print(f"  {name:<13} {uri}")
    if s.get("html_report"):
        r.print(f"HTML report: {s['html_report']}")
    r.print(f"total time: {s['total_seconds']:.0f} s")

