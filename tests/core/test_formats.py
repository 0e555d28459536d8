"""tunesmith.core.formats: every artifact/file format round-trips through its one writer and
reader, refuses an unknown major version naming the file, and is written atomically."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from tunesmith.core.errors import InvalidArgument, NotFound
from tunesmith.core.formats import FormatError
from tunesmith.core.formats import adapter as adapter_fmt
from tunesmith.core.formats import dataset as dataset_fmt
from tunesmith.core.formats import model as model_fmt
from tunesmith.core.formats import report as report_fmt
from tunesmith.core.formats import worker as worker_fmt
from tunesmith.core.storage import Artifact, LocalStorage

SHA = "c" * 64
MODEL_URI = f"artifact://model/{SHA}"
DATASET_URI = f"artifact://dataset/{'d' * 64}"
ROWS = {
    "train": [{"source_row": i, "prompt": f"Message: m{i}\nIntent:", "completion": f" l{i % 2}", "label": f"l{i % 2}",
               "fields": {"input": f"m{i}", "output": f"l{i % 2}"}} for i in range(1, 7)],
    "validation": [{"source_row": 9, "prompt": "Message: v\nIntent:", "completion": " l0", "label": "l0",
                    "fields": {"input": "v", "output": "l0"}}],
}
MANIFEST = dataset_fmt.DatasetManifest(source="t.csv", template="classification", labels=["l0", "l1"],
                                       spec={"seed": 1}, report={"rows_read": 7}, statistics={"train": {"rows": 6}})


def bump_version(path, version="2.0"):
    d = json.loads(path.read_text())
    d["version"] = version
    path.write_text(json.dumps(d))


# --- prepared dataset ---------------------------------------------------------------------
def test_prepared_dataset_round_trip_through_storage(storage):
    art = dataset_fmt.store_prepared(storage, ROWS, MANIFEST)
    assert art.kind == "dataset" and art.uri == f"artifact://dataset/{art.sha256}" and storage.verify(art)
    prepared = dataset_fmt.read_prepared(storage, art.uri)
    assert prepared.manifest.splits == {"train": 6, "validation": 1}
    assert prepared.manifest.labels == ["l0", "l1"] and prepared.manifest.report == {"rows_read": 7}
    assert prepared.rows("train") == ROWS["train"] and prepared.rows("validation") == ROWS["validation"]
    raw = json.loads((prepared.folder / "dataset.json").read_text())
    assert raw["format"] == "tunesmith.dataset" and raw["version"] == dataset_fmt.VERSION
    with pytest.raises(NotFound, match="splits: train, validation"):
        prepared.rows("test")
    with pytest.raises(InvalidArgument):
        prepared.rows("../train")


def test_prepared_dataset_unknown_major_version_is_refused_naming_the_file(tmp_path):
    dataset_fmt.write_prepared(tmp_path / "p", ROWS, MANIFEST)
    bump_version(tmp_path / "p" / "dataset.json", "1.9")  # a newer minor version still reads
    assert dataset_fmt.read_split(tmp_path / "p", "train") == ROWS["train"]
    bump_version(tmp_path / "p" / "dataset.json", "2.0")
    with pytest.raises(FormatError, match=r"p/dataset\.json: tunesmith\.dataset version 2\.0 is not supported"):
        dataset_fmt.read_split(tmp_path / "p", "train")


def test_prepared_dataset_written_before_the_version_field_still_reads(tmp_path):
    folder = tmp_path / "old"
    dataset_fmt.write_prepared(folder, ROWS, MANIFEST)
    d = json.loads((folder / "dataset.json").read_text())
    d.pop("version")
    d["format"] = "tunesmith.prepared/v1"
    (folder / "dataset.json").write_text(json.dumps(d))
    assert dataset_fmt.open_prepared(folder).rows("validation") == ROWS["validation"]
    d["format"] = "something.else"
    (folder / "dataset.json").write_text(json.dumps(d))
    with pytest.raises(FormatError, match="is a 'something.else' file"):
        dataset_fmt.open_prepared(folder)


def test_a_broken_split_line_is_a_format_error_naming_file_and_line(tmp_path):
    dataset_fmt.write_prepared(tmp_path / "p", ROWS, MANIFEST)
    with open(tmp_path / "p" / "train.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(FormatError, match=r"train\.jsonl:7"):
        dataset_fmt.read_split(tmp_path / "p", "train")


def test_dataset_record_is_read_typed_from_the_data_services_proto_json(storage):
    from tunesmith.api.data.v1 import data_pb2
    from tunesmith.core.records import RecordStore, artifact_ref

    art = dataset_fmt.store_prepared(storage, ROWS, MANIFEST)
    ds = data_pb2.Dataset(id="ds-1", name="tickets", artifact=artifact_ref(art), labels=["l0", "l1"])
    ds.splits.add(name="train", rows=6, artifact=artifact_ref(art))
    ds.splits.add(name="validation", rows=1, artifact=artifact_ref(art))
    RecordStore(storage, "datasets", data_pb2.Dataset, noun="dataset").put(ds.id, ds)
    records = dataset_fmt.DatasetRecords(storage)
    rec = records.get("ds-1")
    assert rec == dataset_fmt.DatasetRecord("ds-1", "tickets", art,
                                            (dataset_fmt.SplitInfo("train", 6), dataset_fmt.SplitInfo("validation", 1)),
                                            ("l0", "l1"))
    assert rec.split_rows() == {"train": 6, "validation": 1} and records.list() == [rec]
    for bad in ("ds-none", "../x", ""):
        with pytest.raises(NotFound) as err:
            records.get(bad, field="spec.dataset_id")
        assert err.value.field == "spec.dataset_id"
    # A record written before artifact:// URIs names its artifact by kind and sha256.
    key = "records/datasets/ds-1.json"
    old = storage.read_json(key)
    old["artifact"]["uri"] = f"file:///gone/root/artifacts/dataset/{art.sha256}"
    storage.write_json(key, old)
    assert records.get("ds-1").artifact == art


# --- adapter ------------------------------------------------------------------------------
def peft_folder(tmp_path, base_path="/abs/where/it/was/trained/base"):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4,
                                                            "base_model_name_or_path": base_path}))
    (folder / "adapter_model.safetensors").write_bytes(b"\x00" * 8)
    (folder / "README.md").write_text(f"---\nbase_model: {base_path}\ntags:\n- base_model:adapter:{base_path}\n---\n")
    return folder


def test_adapter_round_trip_rewrites_the_base_path_to_its_artifact_uri(tmp_path):
    folder = peft_folder(tmp_path)
    meta = adapter_fmt.AdapterMeta(base_model_uri=MODEL_URI, base_model_name="tiny", method="lora",
                                   training={"steps": 3})
    adapter_fmt.finalize_adapter(folder, meta)
    assert adapter_fmt.read_adapter(folder) == meta
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == MODEL_URI and config["r"] == 4
    assert "/abs/where" not in "".join(p.read_text(errors="replace") for p in folder.iterdir())
    assert adapter_fmt.base_reference(folder) == MODEL_URI
    raw = json.loads((folder / "tunesmith-adapter.json").read_text())
    assert raw["format"] == "tunesmith.adapter" and raw["version"] == adapter_fmt.VERSION


def test_adapter_unknown_major_version_is_refused_naming_the_file(tmp_path):
    folder = peft_folder(tmp_path)
    adapter_fmt.finalize_adapter(folder, adapter_fmt.AdapterMeta(base_model_uri=MODEL_URI))
    bump_version(folder / "tunesmith-adapter.json", "3.1")
    with pytest.raises(FormatError, match=r"adapter/tunesmith-adapter\.json: tunesmith\.adapter version 3\.1"):
        adapter_fmt.read_adapter(folder)


def test_adapter_base_must_be_a_model_artifact_uri_and_folders_must_be_peft(tmp_path):
    for bad in ("/abs/base", "tiny", DATASET_URI, "file:///x"):
        with pytest.raises(InvalidArgument):
            adapter_fmt.AdapterMeta(base_model_uri=bad)
    with pytest.raises(InvalidArgument, match="not a peft adapter"):
        adapter_fmt.finalize_adapter(tmp_path, adapter_fmt.AdapterMeta(base_model_uri=MODEL_URI))
    legacy = peft_folder(tmp_path, "tiny")  # a plain peft folder: its config's base is all there is
    assert adapter_fmt.base_reference(legacy) == "tiny"
    with pytest.raises(FormatError, match="no tunesmith-adapter.json"):
        adapter_fmt.read_adapter(legacy)


# --- model-store entry --------------------------------------------------------------------
def test_model_entry_round_trip_and_version(storage):
    art = Artifact(MODEL_URI, SHA, "model", 123)
    rec = model_fmt.ModelRecord("tiny", art, "LlamaForCausalLM", 42, "folder:/src", True, created_at=5.0)
    model_fmt.write_entry(storage, rec)
    got = model_fmt.read_entry(storage, "models/tiny.json")
    assert got == rec and got.created_at == 5.0
    raw = storage.read_json("models/tiny.json")
    assert raw["format"] == "tunesmith.model-entry" and raw["artifact"]["uri"] == MODEL_URI
    storage.write_json("models/tiny.json", {**raw, "version": "2.0"})
    with pytest.raises(FormatError, match=r"models/tiny\.json: tunesmith\.model-entry version 2\.0"):
        model_fmt.read_entry(storage, "models/tiny.json")
    with pytest.raises(NotFound):
        model_fmt.read_entry(storage, "models/none.json")


# --- evaluation report --------------------------------------------------------------------
OUTPUTS = [report_fmt.OutputRow(3, "p1", "a", {"base": "b", "tuned": "a", "row": "a label named row"}),
           report_fmt.OutputRow(7, "p2", "c", {"base": "c", "tuned": "c"})]
REPORT = report_fmt.EvaluationReport("evalu-1", {"rows": 2, "scores": [{"label": "base"}]}, "ds-1", "validation")


def test_report_round_trip_through_storage(storage):
    art = report_fmt.store_report(storage, REPORT, iter(OUTPUTS))
    assert art.kind == "report" and art.uri.startswith("artifact://report/") and storage.verify(art)
    folder = storage.resolve(art.uri)
    assert report_fmt.read_report(folder) == REPORT
    assert report_fmt.read_outputs(folder) == OUTPUTS
    bump_version(folder / "report.json", "2.0")  # (the folder is ours in this test only)
    with pytest.raises(FormatError, match=r"report\.json: tunesmith\.report version 2\.0"):
        report_fmt.read_outputs(folder)


def test_a_report_writer_failing_midway_stores_nothing(storage):
    def rows():
        yield OUTPUTS[0]
        raise RuntimeError("generation crashed")

    with pytest.raises(RuntimeError):
        report_fmt.store_report(storage, REPORT, rows())
    assert storage.list_artifacts() == [] and list((storage.root / ".tmp").iterdir()) == []


# --- worker files -------------------------------------------------------------------------
def test_worker_files_round_trip(storage):
    inp = worker_fmt.WorkerInput(base_model=MODEL_URI, dataset=DATASET_URI, validation_split="validation",
                                 method_options={"rank": 4}, hyperparameters={"epochs": 1}, merge=True,
                                 base_model_name="tiny", recipe="dpo", recipe_options={"beta": 0.2},
                                 resume_from=f"artifact://checkpoint/{'c' * 64}")
    inp.write(storage, "train-1")
    assert worker_fmt.WorkerInput.read(storage, "train-1") == inp
    adapter = Artifact(f"artifact://adapter/{'a' * 64}", "a" * 64, "adapter", 9)
    result = worker_fmt.WorkerResult.from_training({
        "output_dir": "/staging/x", "train_seconds": 1.5, "steps": 3, "stopped_early": True,
        "best_validation_loss": None, "final_train_loss": 0.25, "final_metrics": {"rewards/accuracies": 0.9}},
        adapter=adapter)
    result.write(storage, "train-1")
    got = worker_fmt.WorkerResult.read(storage, "train-1")
    assert got == result and got.steps == 3 and got.stopped_early is True and got.merged_model is None
    assert got.final_metrics == {"rewards/accuracies": 0.9} and got.model is None
    assert "output_dir" not in storage.read_json("jobs/train-1/worker-result.json")
    with pytest.raises(InvalidArgument):  # exactly one of adapter and model
        worker_fmt.WorkerResult.from_training({}, adapter=adapter, model=adapter)
    worker_fmt.LatestCheckpoint(f"artifact://checkpoint/{'c' * 64}", 12).write(storage, "train-1")
    assert worker_fmt.LatestCheckpoint.read(storage, "train-1").step == 12
    worker_fmt.WorkerError("out_of_memory", "too big").write(storage, "train-1")
    assert worker_fmt.WorkerError.read(storage, "train-1") == worker_fmt.WorkerError("out_of_memory", "too big")
    for e in ({"type": "progress", "phase": "train", "step": 2, "time": 7.0},
              {"type": "log", "level": "info", "message": "hello"}):
        worker_fmt.WorkerEvent.from_emitted(e).append(storage, "train-1")
    lines = storage.read_bytes("jobs/train-1/worker-events.jsonl").decode().splitlines()
    events = [worker_fmt.WorkerEvent.from_line(line) for line in lines]
    assert [(e.type, e.data) for e in events] == [("progress", {"phase": "train", "step": 2}),
                                                 ("log", {"level": "info", "message": "hello"})]
    assert events[0].time == 7.0


def test_worker_input_holds_artifact_uris_never_local_paths(storage, tmp_path):
    with pytest.raises(InvalidArgument) as err:
        worker_fmt.WorkerInput(base_model=str(tmp_path), dataset=DATASET_URI)
    assert err.value.field == "base_model"
    with pytest.raises(InvalidArgument) as err:
        worker_fmt.WorkerInput(base_model=MODEL_URI, dataset=MODEL_URI)  # the wrong kind
    assert err.value.field == "dataset"
    # A file of the old shape (model_path / dataset_dir) is refused, naming the file.
    storage.write_json("jobs/old/worker-input.json", {"model_path": "/x", "dataset_dir": "/y", "version": "1.0"})
    with pytest.raises(FormatError, match="jobs/old/worker-input.json"):
        worker_fmt.WorkerInput.read(storage, "old")


@pytest.mark.parametrize("cls,file", [(worker_fmt.WorkerInput, "worker-input.json"),
                                      (worker_fmt.WorkerResult, "worker-result.json"),
                                      (worker_fmt.WorkerError, "worker-error.json")])
def test_worker_files_of_an_unknown_major_version_are_refused_naming_the_file(storage, cls, file):
    storage.write_json(f"jobs/j/{file}", {"format": cls.FORMAT, "version": "2.0"})
    with pytest.raises(FormatError, match=rf"jobs/j/{file}: {cls.FORMAT} version 2\.0 is not supported"):
        cls.read(storage, "j")
    storage.write_json(f"jobs/j/{file}", {"format": "tunesmith.other", "version": "1.0"})
    with pytest.raises(FormatError, match=rf"jobs/j/{file} is a 'tunesmith.other' file"):
        cls.read(storage, "j")


def test_worker_event_of_an_unknown_version_is_refused_naming_the_file():
    line = json.dumps({"version": "9.0", "type": "log", "time": 1.0, "data": {}})
    with pytest.raises(FormatError, match=r"events\.jsonl:4: tunesmith\.worker-event version 9\.0"):
        worker_fmt.WorkerEvent.from_line(line, "events.jsonl:4")


def test_a_json_writer_that_cannot_serialise_leaves_the_old_file(storage):
    good = worker_fmt.WorkerInput(base_model=MODEL_URI, dataset=DATASET_URI)
    good.write(storage, "j")
    with pytest.raises(TypeError):
        worker_fmt.WorkerInput(base_model=MODEL_URI, dataset=DATASET_URI, hyperparameters={"x": object()}).write(storage, "j")
    assert worker_fmt.WorkerInput.read(storage, "j") == good
    assert list((storage.root / ".tmp").iterdir()) == []


# --- atomicity of the artifact writers ----------------------------------------------------
KILLED_WRITER = r"""
import sys, time
from tunesmith.core.storage import LocalStorage
from tunesmith.core.formats.dataset import DatasetManifest, store_prepared

def rows():
    for i in range(1000):
        if i == 500:
            print("writing", flush=True)
            time.sleep(60)
        yield {"source_row": i, "prompt": "p", "completion": "c", "label": "", "fields": {}}

store_prepared(LocalStorage(sys.argv[1]), {"train": rows()}, DatasetManifest())
"""


def test_a_dataset_writer_killed_mid_write_leaves_no_visible_artifact(tmp_path):
    root = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    storage = LocalStorage(root)
    assert storage.list_artifacts() == [] and not (root / "artifacts").exists()
    assert storage.clean_staging(older_than_seconds=0) >= 1  # the half-written folder sat in staging
