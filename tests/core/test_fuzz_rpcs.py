"""Property-based fuzzing of every RPC of the four services: no request ever gets INTERNAL.

Each RPC of the data, trainer, evaluator and inference services (taken from the proto service
descriptors, so a new RPC is fuzzed without touching this file) is its own test. Hypothesis
builds request messages from their descriptors: every scalar type with extreme values (int
limits, NaN, +-inf, -0.0, empty / huge / NUL / unicode strings), unknown enum numbers, repeated
and map fields, oneofs, google.protobuf.Struct/Value with small random JSON, nested up to
MAX_DEPTH. Half of the examples are "near-valid": a request the service accepts with one or two
fields replaced by fuzz, and field values drawn from what exists in the fixture (the dataset id,
the model "tiny", splits "train"/"validation", plugin names, the served model, job ids), so the
checks behind the first one are reached too.

Requests go to real gRPC servers started in this process over one temporary storage root (the
approach of tests/integration/conftest.py). Any status but INTERNAL, UNKNOWN or RESOURCE_EXHAUSTED
passes (OK included; see BAD); a failure prints the (shrunk) request and the server-side traceback
of the bug. Requests that found bugs before are pinned (regressions_for) and tried first on every
run. TUNESMITH_FUZZ_EXAMPLES sets the examples per RPC (default 40, about 40 s in all on 2 cores;
raise it to hunt).

Safety: whatever a fuzzed request starts is undone after each example (jobs cancelled, served
models unloaded, a deleted fixture dataset restored). vLLM is switched off in this runtime's
registry (an engine takes minutes to start on a CPU), and the bundled model name is backed by the
tiny model, so nothing converts the bundled GGUF.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor as _descriptor
from google.protobuf import struct_pb2, text_format
from google.protobuf.message import Message
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st
from tunesmith.api.common.v1 import common_pb2
from tunesmith.api.data.v1 import data_pb2, data_pb2_grpc
from tunesmith.api.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc
from tunesmith.api.inference.v1 import inference_pb2, inference_pb2_grpc
from tunesmith.api.trainer.v1 import trainer_pb2, trainer_pb2_grpc

FD = _descriptor.FieldDescriptor
ROOT = Path(__file__).resolve().parents[2]
BANKING = ROOT / "examples" / "banking77"

SERVICES = {
    "data": (data_pb2, "DataService", data_pb2_grpc.DataServiceStub),
    "trainer": (trainer_pb2, "TrainerService", trainer_pb2_grpc.TrainerServiceStub),
    "evaluator": (evaluator_pb2, "EvaluatorService", evaluator_pb2_grpc.EvaluatorServiceStub),
    "inference": (inference_pb2, "InferenceService", inference_pb2_grpc.InferenceServiceStub),
}
RPCS = [(service, method) for service, (module, name, _) in SERVICES.items()
        for method in module.DESCRIPTOR.services_by_name[name].methods]
RPC_IDS = [f"{service}.{method.name}" for service, method in RPCS]

MAX_EXAMPLES = int(os.environ.get("TUNESMITH_FUZZ_EXAMPLES", "40"))
MAX_DEPTH = 3
CALL_TIMEOUT = 20.0
#: An RPC whose calls run past the deadline more often than this fails (a hang, not a slow call).
MAX_DEADLINES = 2
MAX_STREAM_ITEMS = 2000
SERVED = "fz-served"
#: Served from "tiny-strict": the tiny model with a chat template that refuses some conversations
#: (raise_exception, as many real templates do: "roles must alternate user/assistant").
STRICT = "fz-strict"
FIXTURE_SERVED = (SERVED, STRICT)
STRICT_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
#: INTERNAL and UNKNOWN are bugs by contract. RESOURCE_EXHAUSTED too: these requests are far below
#: the 64 MiB message limit, so it can only be an error too big for the client's 8 KiB metadata cap.
BAD = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.RESOURCE_EXHAUSTED)
LIVE = [common_pb2.JOB_STATE_UNSPECIFIED, common_pb2.JOB_STATE_VALIDATING, common_pb2.JOB_STATE_QUEUED,
        common_pb2.JOB_STATE_RUNNING]


# -- the cluster ------------------------------------------------------------------------------
class Cluster:
    """The four services on free localhost ports, sharing one runtime (copied from the small
    fixture of tests/integration/conftest.py)."""

    def __init__(self, runtime, servers):
        self.runtime, self.servers = runtime, servers
        self.channels = {s: grpc.insecure_channel(r.address) for s, r in servers.items()}
        self.stubs = {s: SERVICES[s][2](ch) for s, ch in self.channels.items()}

    def close(self):
        for ch in self.channels.values():
            ch.close()
        for r in self.servers.values():
            r.stop(0)


class _BugLog(logging.Handler):
    """Keeps the traceback of every "rpc failed (a bug)" by its reference id."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.by_reference: dict[str, str] = {}

    def emit(self, record):
        ref = getattr(record, "reference", None)
        if ref:
            self.by_reference[ref] = self.format(record)

    def traceback_for(self, details: str) -> str:
        for ref, text in self.by_reference.items():
            if ref in (details or ""):
                return text
        return "(no server traceback captured)"


@dataclass
class World:
    """The cluster plus the real names and ids the near-valid values are drawn from."""

    cluster: Cluster
    dataset: data_pb2.Dataset
    csv_path: str
    jsonl_path: str
    csv_bytes: bytes
    model_dir: str
    model_uri: str
    adapter_uri: str
    job_ids: dict[str, str] = field(default_factory=dict)
    odd_files: list[str] = field(default_factory=list)
    #: (Get RPC name, job id) of jobs fuzzed calls created: cleanup waits for each to end.
    created: list[tuple[str, str]] = field(default_factory=list)
    bugs: _BugLog = field(default_factory=_BugLog)

    @property
    def stubs(self):
        return self.cluster.stubs


def _banking_rows(intents, per_intent):
    import csv

    counts = {i: 0 for i in intents}
    rows = []
    with open(BANKING / "train.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["category"] in counts and counts[row["category"]] < per_intent:
                counts[row["category"]] += 1
                rows.append({"text": row["text"], "category": row["category"]})
    return rows


def classification_spec(**kw) -> data_pb2.DatasetSpec:
    spec = data_pb2.DatasetSpec(schema=data_pb2.SCHEMA_CLASSIFICATION, template="classification",
                                column_mapping={"input": "text", "output": "category"}, **kw)
    spec.template_options.update({"instruction": "Route this banking customer message to its intent."})
    return spec


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout} s"
        time.sleep(0.1)


def _job_state(get, job_id):
    return get(common_pb2.GetJobRequest(job_id=job_id), timeout=10).job.state


def _cancel(cancel, job_id: str) -> None:
    try:
        cancel(common_pb2.CancelJobRequest(job_id=job_id), timeout=10)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err  # it ended meanwhile


def _make_adapter(runtime, model_dir: str, model_uri: str) -> str:
    """A real (tiny, untrained) LoRA adapter artifact on the tiny model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from tunesmith.core.formats.adapter import AdapterMeta, finalize_adapter

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    with runtime.storage.staging_dir() as tmp:
        folder = tmp / "adapter"
        model.save_pretrained(str(folder))
        finalize_adapter(folder, AdapterMeta(base_model_uri=model_uri, base_model_name="tiny", method="lora"))
        return runtime.storage.put_artifact("adapter", folder, move=True).uri


def _load_served(stubs, name=SERVED):
    inf = stubs["inference"]
    model = "tiny-strict" if name == STRICT else "tiny"
    inf.LoadModel(inference_pb2.LoadModelRequest(name=name, model=model, backend="transformers",
                                                 max_model_len=64, enable_adapters=True), timeout=30)

    deadline = time.monotonic() + 120
    while True:
        served = inf.GetServedModel(inference_pb2.GetServedModelRequest(name=name), timeout=10)
        if served.state != inference_pb2.SERVED_MODEL_STATE_LOADING:
            break
        assert time.monotonic() < deadline, f"{name} did not load in 120 s"
        time.sleep(0.1)
    assert served.state == inference_pb2.SERVED_MODEL_STATE_READY, served.error


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir):
    from tunesmith.cli.servers import start_service
    from tunesmith.core.models import BUNDLED_NAME
    from tunesmith.core.plugins import PluginRegistry
    from tunesmith.core.runtime import Runtime

    os.environ["HF_HUB_OFFLINE"] = "1"
    root = tmp_path_factory.mktemp("fuzz-storage")
    files = tmp_path_factory.mktemp("fuzz-files")
    registry = PluginRegistry()  # our own: the patch below must not leak into other tests
    vllm = registry.all("inference_backends").get("vllm")
    if vllm is not None:  # a vLLM engine takes minutes to start here: never let a fuzzed call start one
        vllm.available = lambda: (False, "vLLM is switched off in the fuzz test")
    runtime = Runtime.create(str(root), registry)
    tiny = runtime.models.register("tiny", tiny_model_dir)
    runtime.models.register(BUNDLED_NAME, tiny_model_dir)  # no GGUF conversion, whatever is asked
    strict_dir = tmp_path_factory.mktemp("fuzz-strict") / "tiny-strict"
    import shutil

    shutil.copytree(tiny_model_dir, strict_dir)
    (strict_dir / "chat_template.jinja").write_text(STRICT_CHAT_TEMPLATE)
    runtime.models.register("tiny-strict", str(strict_dir))

    rows = _banking_rows(["card_arrival", "age_limit", "change_pin"], 8)
    import csv
    import json

    csv_path = files / "train.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "category"])
        w.writeheader()
        w.writerows(rows)
    jsonl_path = files / "train.jsonl"
    jsonl_path.write_text("".join(json.dumps({"text": r["text"], "category": r["category"]}) + "\n" for r in rows))
    odd = {"garbage.csv": b"\x00\xff\xfe" * 50, "garbage.parquet": b"PAR1" + b"\x00" * 64 + b"PAR1",
           "garbage.json": b'{"text": [1, 2', "empty.jsonl": b"", "header-only.csv": b"text,category\n",
           "latin1.csv": "text,category\ncaf\xe9 au lait,x\n".encode("latin-1"),
           "ragged.csv": b'text,category\n"unterminated,x\na,b,c,d\n', "nested.jsonl": b'{"text": {"a": 1}, "category": [2]}\n',
           "array.json": b'[{"text": "hi", "category": null}]', "bom.csv": b"\xef\xbb\xbftext,category\nhi,x\n",
           "alpaca.jsonl": b"".join(json.dumps({"instruction": "Say it", "input": r["text"], "output": r["category"]})
                                    .encode() + b"\n" for r in rows),
           "chat.jsonl": b"".join(json.dumps({"messages": [{"role": "user", "content": r["text"]},
                                                           {"role": "assistant", "content": r["category"]}]}).encode()
                                  + b"\n" for r in rows),
           "chat-bad.jsonl": b"".join(json.dumps({"messages": [{"role": "assistant", "content": r["text"]},
                                                               {"role": "assistant", "content": "x"}]}).encode()
                                      + b"\n" for r in rows),
           "text.jsonl": b"".join(json.dumps({"text": r["text"]}).encode() + b"\n" for r in rows),
           "pc.jsonl": b"".join(json.dumps({"prompt": r["text"], "completion": r["category"]}).encode() + b"\n"
                                for r in rows),
           "pref.jsonl": b"".join(json.dumps({"prompt": r["text"], "chosen": r["category"], "rejected": "no"}).encode()
                                  + b"\n" for r in rows)}
    for name, blob in odd.items():
        (files / name).write_bytes(blob)

    servers = {s: start_service(s, runtime, port=0, host="127.0.0.1") for s in SERVICES}
    cluster = Cluster(runtime, servers)
    bugs = _BugLog()
    server_log = logging.getLogger("tunesmith.server")
    server_log.addHandler(bugs)
    try:
        stubs = cluster.stubs
        spec = classification_spec(name="fz-banking", split=data_pb2.SplitSpec(validation_fraction=0.25, seed=1))
        ds = stubs["data"].RegisterDataset(data_pb2.RegisterDatasetRequest(source_uri=str(csv_path), spec=spec),
                                           timeout=60).dataset
        adapter_uri = _make_adapter(runtime, tiny_model_dir, tiny.artifact.uri)
        for name in FIXTURE_SERVED:
            _load_served(stubs, name)

        w_ = World(cluster, ds, str(csv_path), str(jsonl_path), csv_path.read_bytes(), tiny_model_dir,
                   tiny.artifact.uri, adapter_uri, bugs=bugs, odd_files=[str(files / n) for n in odd])
        # One finished job of each kind, so Get/Cancel/Stream see real ids.
        tr = stubs["trainer"]
        job = tr.CreateTrainingJob(trainer_pb2.CreateTrainingJobRequest(spec=_training_spec(w_)), timeout=30).job
        _cancel(tr.CancelTrainingJob, job.id)
        w_.job_ids["training"] = job.id
        ev = stubs["evaluator"]
        job = ev.CreateEvaluation(evaluator_pb2.CreateEvaluationRequest(spec=_evaluation_spec(w_)), timeout=30).job
        _cancel(ev.CancelEvaluation, job.id)
        w_.job_ids["evaluation"] = job.id
        job = tr.CreateModelImportJob(trainer_pb2.CreateModelImportJobRequest(
            spec=trainer_pb2.ModelImportSpec(name="fz-imported", path=tiny_model_dir)), timeout=30).job
        w_.job_ids["model_import"] = job.id
        job = tr.CreateMergeJob(trainer_pb2.CreateMergeJobRequest(spec=trainer_pb2.MergeSpec(
            adapter=common_pb2.ArtifactRef(uri=adapter_uri))), timeout=30).job
        w_.job_ids["merge"] = job.id
        for kind, get in (("training", tr.GetTrainingJob), ("evaluation", ev.GetEvaluation),
                          ("model_import", tr.GetModelImportJob), ("merge", tr.GetMergeJob)):
            _wait(lambda get=get, kind=kind: _job_state(get, w_.job_ids[kind]) not in LIVE, 180,
                  f"the {kind} job ending")
        yield w_
    finally:
        server_log.removeHandler(bugs)
        cluster.close()


def _training_spec(w: World) -> trainer_pb2.TrainingJobSpec:
    return trainer_pb2.TrainingJobSpec(
        base_model="tiny", dataset_id=w.dataset.id, train_split="train", validation_split="validation",
        method=trainer_pb2.MethodSpec(name="lora", lora=trainer_pb2.LoraConfig(rank=4, alpha=8,
                                                                              target_modules=["all-linear"])),
        hyperparameters=trainer_pb2.Hyperparameters(max_steps=1, batch_size=2, learning_rate=1e-3),
        device="cpu")


def _evaluation_spec(w: World) -> evaluator_pb2.EvaluationSpec:
    return evaluator_pb2.EvaluationSpec(
        dataset_id=w.dataset.id, split="validation", max_rows=2, benchmarks=["exact_match"],
        models=[evaluator_pb2.ModelUnderTest(label="base", model="tiny")],
        generation=evaluator_pb2.GenerationConfig(max_new_tokens=2, batch_size=2), backend="transformers")


# -- strategies: any message from its descriptor -------------------------------------------------
EDGE_INTS = [0, 1, -1, -2, 2, 3, 7, 8, 16, 100, -100, 255, 256, 1000, 1024, 4096, 8192, 8193, 32768, 65535, 1 << 20,
             2**31 - 1, -2**31, 2**32 - 1, 2**53, 2**62, 2**63 - 1, -2**63, 2**64 - 1]
INT_RANGES = {FD.TYPE_INT32: (-2**31, 2**31 - 1), FD.TYPE_SINT32: (-2**31, 2**31 - 1),
              FD.TYPE_SFIXED32: (-2**31, 2**31 - 1), FD.TYPE_INT64: (-2**63, 2**63 - 1),
              FD.TYPE_SINT64: (-2**63, 2**63 - 1), FD.TYPE_SFIXED64: (-2**63, 2**63 - 1),
              FD.TYPE_UINT32: (0, 2**32 - 1), FD.TYPE_FIXED32: (0, 2**32 - 1),
              FD.TYPE_UINT64: (0, 2**64 - 1), FD.TYPE_FIXED64: (0, 2**64 - 1)}
EDGE_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 0.999999, 1.000001, 2.0, 2.0000001, 1e-3, 1e-9, 5e-324, 1e308,
               -1e308, 3.4e38, math.nan, math.inf, -math.inf]
SPECIAL_STRINGS = [
    "", " ", "\x00", "a\x00b", "\n", "\t", ".", "..", "/", "\\", "~", "~/", "../../etc/passwd", "/etc/passwd",
    "/tmp", "/nonexistent/file.csv", "C:\\x.csv", "file:///etc/passwd", "file://", "file:///", "file:///%00",
    "http://example.invalid/x.csv", "s3://bucket/x.csv", "artifact://", "artifact://model/", "artifact://x/y",
    "artifact://model/" + "0" * 64, "artifact://adapter/" + "f" * 64, "artifact://../../" + "0" * 64,
    "%2e%2e%2f", "${HOME}", "{{ x }}", "{x}", "{0}", "%s", "null", "NaN", "-1", "1e999", "[]", "{}", '{"a": 1}',
    "é", "ß", "İ", "日本語", "💥", "\u202e", "\ufeff", "\u0301", "\U0010ffff", "MANIFEST.json", ".tmpx",
    "a" * 256, "a" * 257, "b" * 4097, "x" * 100_000, "all-linear", "true", "TRUE", "0x10",
]
SPECIAL_BYTES = [b"", b"\x00", b"\xff\xfe\x00", b"a,b\n1,2\n", b"text,category\n", b"\xef\xbb\xbftext,category\nhi,x\n",
                 b'{"text": "hi"}\n', b"PAR1\x00\x00PAR1", b"\x00" * 4096]


def _ints(lo: int, hi: int):
    return st.one_of(st.sampled_from([x for x in EDGE_INTS if lo <= x <= hi]), st.integers(max(lo, -3), min(hi, 64)),
                     st.integers(lo, hi))


def _floats(width: int = 64):
    edges = [x for x in EDGE_FLOATS if width == 64 or not math.isfinite(x) or abs(x) < 3.4e38]
    return st.one_of(st.sampled_from(edges), st.floats(width=width, allow_nan=True, allow_infinity=True))


_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=24)
_STRINGS = st.one_of(st.sampled_from(SPECIAL_STRINGS), _TEXT, st.text(st.characters(codec="ascii"), max_size=12))
_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), _floats(), st.integers(-2**53, 2**53).map(float), _STRINGS),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_STRINGS, inner, max_size=3)),
    max_leaves=6)
_JSON_OBJECT = st.dictionaries(_STRINGS, _JSON, max_size=4)


def _struct(d: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(d)
    return s


def _value(x) -> struct_pb2.Value:
    return _struct({"v": x}).fields["v"]


def _well_known(desc):
    """A strategy for a google.protobuf well-known type, or None."""
    name = desc.full_name
    if name == "google.protobuf.Struct":
        return _JSON_OBJECT.map(_struct)
    if name == "google.protobuf.Value":
        return _JSON.map(_value)
    if name == "google.protobuf.ListValue":
        return st.lists(_JSON, max_size=3).map(lambda xs: _value(xs).list_value)
    if name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        from google.protobuf import duration_pb2, timestamp_pb2

        cls = timestamp_pb2.Timestamp if name.endswith("Timestamp") else duration_pb2.Duration
        return st.builds(lambda s, n: cls(seconds=s, nanos=n), _ints(-2**63, 2**63 - 1), _ints(-2**31, 2**31 - 1))
    return None


class Fuzz:
    """Strategies for messages of any descriptor, mixing in near-valid `hints` by field name."""

    def __init__(self, hints: dict[str, list]):
        self.hints = hints
        self._cache: dict[tuple[str, int], st.SearchStrategy] = {}

    def message(self, desc, depth: int = 0) -> st.SearchStrategy:
        wkt = _well_known(desc)
        if wkt is not None:
            return wkt
        key = (desc.full_name, depth)
        if key not in self._cache:
            self._cache[key] = self._build(desc, depth)
        return self._cache[key]

    def _build(self, desc, depth):
        cls = _message_class(desc)

        @st.composite
        def build(draw):
            msg = cls()
            if depth > MAX_DEPTH:
                return msg
            in_oneof = set()
            for oneof in desc.oneofs:
                in_oneof.update(f.name for f in oneof.fields)
                choice = draw(st.sampled_from([None, *oneof.fields]))
                if choice is not None:
                    set_field(msg, choice, draw(self.value(choice, depth)))
            for f in desc.fields:
                if f.name in in_oneof:
                    continue
                if draw(st.integers(0, 1 if depth == 0 else 2)) >= 1 + (depth > 0):  # shrinks towards "unset"
                    set_field(msg, f, draw(self.value(f, depth)))
            return msg

        return build()

    def value(self, f, depth: int) -> st.SearchStrategy:
        if _is_map(f):
            key_f, value_f = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            generic = st.dictionaries(self.single(key_f, depth + 1), self.single(value_f, depth + 1), max_size=3)
        elif f.is_repeated:
            generic = st.lists(self.single(f, depth + 1), max_size=3)
        else:
            return self.single(f, depth + 1)
        hints = [h for h in self.hints.get(f.name, []) if isinstance(h, dict if _is_map(f) else list)]
        return st.one_of(st.sampled_from(hints), generic) if hints else generic

    def single(self, f, depth: int) -> st.SearchStrategy:
        if f.type == FD.TYPE_MESSAGE or f.type == FD.TYPE_GROUP:
            generic = self.message(f.message_type, depth)
        elif f.type == FD.TYPE_ENUM:
            numbers = [v.number for v in f.enum_type.values]
            if getattr(f.enum_type, "is_closed", False):
                generic = st.sampled_from(numbers)
            else:  # open enum: the wire carries unknown numbers too
                generic = st.one_of(st.sampled_from(numbers), _ints(-2**31, 2**31 - 1))
        elif f.type == FD.TYPE_STRING:
            generic = _STRINGS
        elif f.type == FD.TYPE_BYTES:
            generic = st.one_of(st.sampled_from(SPECIAL_BYTES), st.binary(max_size=64))
        elif f.type == FD.TYPE_BOOL:
            generic = st.booleans()
        elif f.type == FD.TYPE_DOUBLE:
            generic = _floats()
        elif f.type == FD.TYPE_FLOAT:
            generic = _floats(32)
        else:
            generic = _ints(*INT_RANGES[f.type])
        hints = None if (f.is_repeated and not _is_map_entry_field(f)) else self.hints.get(f.name)
        hints = [h for h in hints or [] if _fits(f, h)]
        return st.one_of(st.sampled_from(hints), generic) if hints else generic

    # -- near-valid requests: a valid one with one or two fields replaced ---------------------
    def mutated(self, template: Message) -> st.SearchStrategy:
        """`template` with 0-2 of its places replaced by fuzz: a set field at any depth, one
        element of a repeated field, or a field not set yet (of the message or a set sub-message)."""
        @st.composite
        def build(draw):
            msg = type(template)()
            msg.CopyFrom(template)
            for _ in range(draw(st.integers(0, 2))):
                places = list(_places(msg))
                present = [p for p in places if p[2] is not None or _is_set(p[0], p[1])]
                if present and draw(st.integers(0, 2)) < 2:  # mostly what the valid request has
                    places = present
                holder, f, index = draw(st.sampled_from(places))
                if index is not None:  # one element of a repeated field: replace or drop it
                    items = getattr(holder, f.name)
                    if index >= len(items):
                        continue  # a previous mutation removed it
                    if draw(st.integers(0, 3)) == 3:
                        del items[index]
                    elif f.type == FD.TYPE_MESSAGE:
                        items[index].CopyFrom(draw(self.single(f, 1)))
                    else:
                        items[index] = draw(self.single(f, 1))
                    continue
                holder.ClearField(f.name)
                set_field(holder, f, draw(self.value(f, 0)))
            return msg

        return build()


def _is_set(msg: Message, f) -> bool:
    if f.is_repeated:
        return len(getattr(msg, f.name)) > 0
    if f.has_presence:
        return msg.HasField(f.name)
    return getattr(msg, f.name) != f.default_value


def _places(msg: Message):
    """(holder, field, index or None) of every place in `msg` a mutation may change."""
    for f in msg.DESCRIPTOR.fields:
        yield msg, f, None
    for f, v in msg.ListFields():
        if _is_map(f):
            continue
        if f.is_repeated:
            for i, item in enumerate(v):
                yield msg, f, i
                if f.type == FD.TYPE_MESSAGE and _well_known(f.message_type) is None:
                    yield from _places(item)
        elif f.type == FD.TYPE_MESSAGE and _well_known(f.message_type) is None:
            yield from _places(v)


def _fits(f, hint) -> bool:
    """Whether a hint can be the value of the (non-repeated) field `f`: names collide across
    messages (DatasetSpec.split is a SplitSpec, PreviewDatasetRequest.split a string)."""
    if f.type == FD.TYPE_MESSAGE:
        return isinstance(hint, Message) and hint.DESCRIPTOR.full_name == f.message_type.full_name
    if f.type == FD.TYPE_STRING:
        return isinstance(hint, str)
    if f.type == FD.TYPE_BYTES:
        return isinstance(hint, bytes)
    if f.type == FD.TYPE_BOOL:
        return isinstance(hint, bool)
    if f.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return isinstance(hint, float)
    return isinstance(hint, int) and not isinstance(hint, bool)


def _is_map(f) -> bool:
    return f.type == FD.TYPE_MESSAGE and f.message_type.GetOptions().map_entry


def _is_map_entry_field(f) -> bool:
    return f.containing_type is not None and f.containing_type.GetOptions().map_entry


def _message_class(desc):
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(desc)


def set_field(msg: Message, f, value) -> None:
    if _is_map(f):
        target = getattr(msg, f.name)
        for k, v in value.items():
            if isinstance(v, Message):
                target[k].CopyFrom(v)
            else:
                target[k] = v
    elif f.is_repeated:
        target = getattr(msg, f.name)
        for v in value:
            if isinstance(v, Message):
                target.add().CopyFrom(v)
            else:
                target.append(v)
    elif f.type == FD.TYPE_MESSAGE:
        sub = getattr(msg, f.name)
        sub.SetInParent()
        sub.CopyFrom(value)
    else:
        setattr(msg, f.name, value)


def shown(msg: Message, limit: int = 120) -> str:
    """The message as text with long strings and bytes cut (a 100000-character name is noise)."""
    out = type(msg)()
    out.CopyFrom(msg)

    def cut(m):
        for f, v in m.ListFields():
            if _is_map(f):
                for k in list(v.keys()):
                    if isinstance(v[k], Message):
                        cut(v[k])
                    elif isinstance(v[k], (str, bytes)) and len(v[k]) > limit:
                        v[k] = v[k][:limit] + (f"...<{len(v[k])}>" if isinstance(v[k], str) else b"...")
            elif f.type == FD.TYPE_MESSAGE:
                for item in (v if f.is_repeated else [v]):
                    cut(item)
            elif f.type in (FD.TYPE_STRING, FD.TYPE_BYTES):
                items = list(v) if f.is_repeated else [v]
                short = [s[:limit] + (f"...<{len(s)} chars>" if isinstance(s, str) else b"...") if len(s) > limit else s
                         for s in items]
                if f.is_repeated:
                    del v[:]
                    v.extend(short)
                else:
                    setattr(m, f.name, short[0])
    cut(out)
    return f"{type(msg).__name__} {{ {text_format.MessageToString(out, as_one_line=True)} }}"


# -- per-RPC hints and near-valid templates ---------------------------------------------------------
def hints_for(w: World) -> dict[str, list]:
    job_ids = list(w.job_ids.values())
    models = ["tiny", "tiny-strict", w.model_uri, SERVED, STRICT, "fz-imported", "smollm2-135m-instruct",
              "artifact://model/" + "0" * 64, w.dataset.artifact.uri]
    return {
        "dataset_id": [w.dataset.id, "ds-000000000000", w.job_ids.get("training", "")],
        "job_id": job_ids + [w.dataset.id, "train-000000000000"],
        "sweep_id": job_ids,
        "model": models, "base_model": models, "tokenizer_model": models, "reference_model": models,
        "base": [SERVED, STRICT, "tiny"],
        "name": ["tiny", SERVED, STRICT, "fz-new", "fz-new2", "lora", "fz-imported", "Fz.Model_1", "forward"],
        "split": ["train", "validation", "train_2"], "train_split": ["train", "validation"],
        "validation_split": ["validation", "train"],
        "template": ["classification", "chat", "alpaca", "plain"],
        "benchmarks": [["exact_match"], ["accuracy", "exact_match"], ["exact_match", "exact_match"]],
        "backend": ["transformers", "vllm"], "executor": ["local"],
        "device": ["cpu", "auto", "cuda", "cuda:0", "cuda:99", "mps", "CPU"],
        "source_uri": [w.csv_path, "file://" + w.csv_path, w.jsonl_path, w.model_dir + "/config.json", w.model_dir,
                       *w.odd_files],
        "path": [w.model_dir, w.model_dir + "/config.json", w.csv_path],
        "uri": [w.adapter_uri, w.model_uri, w.dataset.artifact.uri, w.dataset.source.uri],
        "filename": ["train.csv", "train.jsonl", "x.json", "x.parquet", "x.txt"],
        "label": ["base", "tuned"], "baseline": ["base", "tuned"],
        "column_mapping": [{"input": "text", "output": "category"}, {"input": "category", "output": "text"},
                           {"prompt": "text", "completion": "category"}],
        "labels": [{"team": "fuzz"}, {"Bad Key": "x"}],
        "template_options": [_struct({"instruction": "Route this message."}), _struct({"instruction": 3}),
                             _struct({"labels": ["a", "b"]}), _struct({"system": None}), _struct({"system": "Be brief."}),
                             _struct({"instruction": {"a": 1}}), _struct({"input_label": ""})],
        "rows": [[_struct({"input": "my card is late", "output": "card_arrival"})],
                 [_struct({"instruction": "Say hi", "output": "hi"})],
                 [_struct({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})],
                 [_struct({"messages": [{"role": "assistant", "content": "hi"}, {"role": "assistant", "content": "yo"}]})],
                 [_struct({"messages": [{"role": "user", "content": "hi"}]})],
                 [_struct({"messages": "hi"})], [_struct({"messages": [1, None]})], [_struct({"messages": []})],
                 [_struct({"messages": [{"role": 1, "content": ["x"]}]})], [_struct({"input": 1, "output": None})],
                 [_struct({"input": ["a"], "output": {"b": 2}})], [_struct({"text": True})],
                 [_struct({"prompt": {"a": 1}, "completion": 2.5})], [_struct({"instruction": None, "output": "x"})]],
        "sha256": [hashlib.sha256(w.csv_bytes).hexdigest(), "0" * 64],
        "idempotency_key": ["fz-key-1", "fz-key-2"],
        "target_modules": [["all-linear"], ["q_proj", "v_proj"], ["no_such_module"]],
        "stop": [["\n"], ["."]],
        "label_filter": [["card_arrival"], ["no-such-label"]],
        "states": [[common_pb2.JOB_STATE_CANCELLED], [common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED]],
        "chunk": [w.csv_bytes],
        "text": ["hello", "my card has not arrived"],
        "page_token": [_token(x) for x in ([1], ["a"], [], [None], [1e308, 0, "x"], [[1]], [{"a": 1}], [0, 0, ""],
                                           [2**63, -1, "ds-0"], "x", {"a": 1}, [True, 1.5])] + ["@@", "=", "eyJ"],
        "role": [inference_pb2.CHAT_ROLE_ASSISTANT, inference_pb2.CHAT_ROLE_TOOL, inference_pb2.CHAT_ROLE_SYSTEM],
        "content": ["hello"],
    }


def _token(key) -> str:
    """A page token as the services write them (urlsafe base64 of a JSON list), of any JSON."""
    import base64
    import json

    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def templates_for(w: World) -> dict[str, list[Message]]:
    """Valid requests of the RPCs that need more than one right field to get anywhere."""
    ds = w.dataset.id
    d, t, e, i, c = data_pb2, trainer_pb2, evaluator_pb2, inference_pb2, common_pb2

    def odd(name):
        return next(p for p in w.odd_files if p.endswith("/" + name))
    prompt = i.Prompt(text="my card has not arrived")
    chat = i.Prompt(chat=i.Conversation(messages=[i.ChatMessage(role=i.CHAT_ROLE_USER, content="hi")]))
    sampling = i.SamplingParams(max_new_tokens=4)

    def jobs(kind):
        return [c.GetJobRequest(job_id=w.job_ids[kind])]

    def events(kind):
        return [c.JobEventsRequest(job_id=w.job_ids[kind], follow=True)]
    return {
        "data.RegisterDataset": [d.RegisterDatasetRequest(source_uri=w.csv_path, spec=classification_spec(
            name="fz", split=d.SplitSpec(validation_fraction=0.25)))] + [
            d.RegisterDatasetRequest(source_uri=odd(name), spec=d.DatasetSpec(schema=schema, template=template,
                                                                             tokenizer_model=tok))
            for name, schema, template, tok in (
                ("alpaca.jsonl", d.SCHEMA_ALPACA, "alpaca", ""), ("chat.jsonl", d.SCHEMA_CHAT, "chat", "tiny-strict"),
                ("chat-bad.jsonl", d.SCHEMA_CHAT, "chat", "tiny-strict"), ("text.jsonl", d.SCHEMA_TEXT, "plain", ""),
                ("pc.jsonl", d.SCHEMA_PROMPT_COMPLETION, "", ""), ("pref.jsonl", d.SCHEMA_PREFERENCE, "", ""))],
        "data.GetDataset": [d.GetDatasetRequest(dataset_id=ds)],
        "data.PreviewDataset": [d.PreviewDatasetRequest(dataset_id=ds, split="validation", limit=3)],
        "data.GetDatasetStatistics": [d.GetDatasetStatisticsRequest(dataset_id=ds)],
        "data.DeleteDataset": [d.DeleteDatasetRequest(dataset_id=ds)],
        "data.RenderTemplate": [d.RenderTemplateRequest(
            template="classification", template_options=_struct({"instruction": "Route it."}),
            rows=[_struct({"input": "my card is late", "output": "card_arrival"})]),
            d.RenderTemplateRequest(template="chat", tokenizer_model="tiny-strict", rows=[_struct(
                {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})])],
        "trainer.CreateTrainingJob": [t.CreateTrainingJobRequest(spec=_training_spec(w), labels={"team": "fuzz"})],
        "trainer.GetTrainingJob": jobs("training"), "trainer.GetMergeJob": jobs("merge"),
        "trainer.GetModelImportJob": jobs("model_import"), "evaluator.GetEvaluation": jobs("evaluation"),
        "trainer.CancelTrainingJob": [c.CancelJobRequest(job_id=w.job_ids["training"])],
        "evaluator.CancelEvaluation": [c.CancelJobRequest(job_id=w.job_ids["evaluation"])],
        "trainer.StreamTrainingJobEvents": events("training"), "trainer.StreamMergeJobEvents": events("merge"),
        "evaluator.StreamEvaluationEvents": events("evaluation"),
        "trainer.CreateMergeJob": [t.CreateMergeJobRequest(spec=t.MergeSpec(
            adapter=c.ArtifactRef(uri=w.adapter_uri), base_model="tiny"))],
        "trainer.CreateModelImportJob": [t.CreateModelImportJobRequest(spec=t.ModelImportSpec(
            name="fz-import", path=w.model_dir))],
        "trainer.PlanMemory": [t.PlanMemoryRequest(spec=_training_spec(w), device="cpu")],
        "trainer.CreateSweep": [t.CreateSweepRequest(base_spec=_training_spec(w))],
        "evaluator.CreateEvaluation": [e.CreateEvaluationRequest(spec=_evaluation_spec(w))],
        "inference.LoadModel": [i.LoadModelRequest(name="fz-new", model="tiny", backend="transformers",
                                                   max_model_len=64)],
        "inference.Generate": [i.GenerateRequest(model=SERVED, prompts=[prompt, chat], sampling=sampling),
                               i.GenerateRequest(model=STRICT, prompts=[chat], sampling=sampling)],
        "inference.GenerateStream": [i.GenerateRequest(model=SERVED, prompts=[chat], sampling=sampling),
                                     i.GenerateRequest(model=STRICT, prompts=[chat], sampling=sampling)],
        "inference.GetServedModel": [i.GetServedModelRequest(name=SERVED)],
        "inference.UnloadModel": [i.UnloadModelRequest(name=SERVED)],
        "inference.LoadAdapter": [i.LoadAdapterRequest(name="fz-adapter", base=SERVED,
                                                       adapter=c.ArtifactRef(uri=w.adapter_uri))],
        "inference.UnloadAdapter": [i.UnloadAdapterRequest(name="fz-adapter")],
    }


def regressions_for(w: World) -> dict[str, list]:
    """Requests that once got INTERNAL (or RESOURCE_EXHAUSTED), tried first on every run: the
    fuzz finds bugs by chance, these keep them found."""
    d, t, i, c = data_pb2, trainer_pb2, inference_pb2, common_pb2
    nan_options = _struct({"instruction": "Route it."})
    nan_options.fields["instruction"].number_value = math.nan
    inf_row = _struct({"input": "x", "output": "y"})
    inf_row.fields["input"].list_value.values.add().number_value = math.inf
    bad_chat = i.Prompt(chat=i.Conversation(messages=[i.ChatMessage(role=i.CHAT_ROLE_ASSISTANT, content="hi")]))
    strict_row = _struct({"messages": [{"role": "assistant", "content": "hi"}, {"role": "assistant", "content": "x"}]})
    huge = "x" * 100_000
    adapter = c.ArtifactRef(uri=w.adapter_uri)
    return {
        "data.RegisterDataset": [
            d.RegisterDatasetRequest(source_uri=w.csv_path, spec=classification_spec(template_options=nan_options)),
            d.RegisterDatasetRequest(source_uri="~0", spec=classification_spec()),
            d.RegisterDatasetRequest(source_uri="~no-such-user/x.csv", spec=classification_spec()),
            d.RegisterDatasetRequest(source_uri="/tmp/" + "a" * 300 + ".csv", spec=classification_spec()),
            d.RegisterDatasetRequest(source_uri=w.csv_path, spec=d.DatasetSpec(label_filter=[""] * 10_000)),
        ],
        "data.UploadDataset": [[d.UploadDatasetRequest(header=d.UploadHeader(
            filename="train.csv", spec=classification_spec(template_options=nan_options)))]],
        "data.RenderTemplate": [
            d.RenderTemplateRequest(template="classification", template_options=nan_options, rows=[inf_row]),
            d.RenderTemplateRequest(template="chat", tokenizer_model="tiny-strict", rows=[strict_row]),
        ],
        "data.GetDataset": [d.GetDatasetRequest(dataset_id=huge)],
        "data.GetDataJob": [c.GetJobRequest(job_id=huge)],
        "trainer.GetSweep": [t.GetSweepRequest(sweep_id="日本語💥" * 20_000)],
        "trainer.CreateModelImportJob": [
            t.CreateModelImportJobRequest(spec=t.ModelImportSpec(name="fz-x", path="~no-such-user/model")),
            t.CreateModelImportJobRequest(spec=t.ModelImportSpec(name="fz-x", path="/tmp/" + "m" * 300)),
        ],
        "inference.LoadAdapter": [i.LoadAdapterRequest(name=name, base=SERVED, adapter=adapter)
                                  for name in ("Fz.Model_1", "forward")],
        "inference.Generate": [
            i.GenerateRequest(model=SERVED, prompts=[i.Prompt(text="hi")],
                              sampling=i.SamplingParams(temperature=1.0, repetition_penalty=5e-324)),
            i.GenerateRequest(model=SERVED, prompts=[i.Prompt(text="hi")], sampling=i.SamplingParams(temperature=1e-300)),
            i.GenerateRequest(model=STRICT, prompts=[bad_chat]),
        ],
        "inference.GenerateStream": [
            i.GenerateRequest(model=SERVED, prompts=[i.Prompt(text="hi")], sampling=i.SamplingParams(temperature=1e-300)),
            i.GenerateRequest(model=STRICT, prompts=[bad_chat]),
        ],
    }


def request_strategy(w: World, fuzz: Fuzz, rpc_id: str, method) -> st.SearchStrategy:
    """One request (a list of messages for a client-streaming RPC)."""
    templates = templates_for(w).get(rpc_id, [])
    one = fuzz.message(method.input_type)
    if templates:
        one = st.one_of(one, *[fuzz.mutated(t) for t in templates])
    if not method.client_streaming:
        return one
    # UploadDataset: a (fuzzed or near-valid) header first, then a few fuzzed chunk/header parts.
    header = classification_spec(name="fz-upload", split=data_pb2.SplitSpec(validation_fraction=0.25))
    headers = st.one_of(fuzz.mutated(data_pb2.UploadDatasetRequest(
        header=data_pb2.UploadHeader(filename="train.csv", spec=header))), one)
    half = len(w.csv_bytes) // 2
    real_chunks = [data_pb2.UploadDatasetRequest(chunk=w.csv_bytes[:half]),
                   data_pb2.UploadDatasetRequest(chunk=w.csv_bytes[half:])]
    fuzzed_part = st.one_of(st.binary(max_size=64).map(lambda b: data_pb2.UploadDatasetRequest(chunk=b)), one)
    parts = st.one_of(st.just(real_chunks), st.lists(fuzzed_part, max_size=3),
                      st.tuples(st.integers(0, 2), fuzzed_part).map(lambda ip: [*real_chunks[:ip[0]], ip[1],
                                                                                 *real_chunks[ip[0]:]]))
    return st.tuples(headers, parts).map(lambda hp: [hp[0], *hp[1]])


# -- calling, and undoing what a call started --------------------------------------------------------
#: Create RPC -> (service, the Get RPC of what it creates).
CREATES_JOB = {"CreateTrainingJob": ("trainer", "GetTrainingJob"), "CreateMergeJob": ("trainer", "GetMergeJob"),
               "CreateModelImportJob": ("trainer", "GetModelImportJob"),
               "CreateEvaluation": ("evaluator", "GetEvaluation"), "CreateSyntheticDataJob": ("data", "GetDataJob")}


def call(w: World, service: str, method, request) -> grpc.StatusCode:
    stub = getattr(w.stubs[service], method.name)
    try:
        if method.client_streaming:
            stub(iter(request), timeout=CALL_TIMEOUT)
        elif method.server_streaming:
            for n, _ in enumerate(stub(request, timeout=CALL_TIMEOUT)):
                if n >= MAX_STREAM_ITEMS:
                    break
        else:
            response = stub(request, timeout=CALL_TIMEOUT)
            if method.name in CREATES_JOB:
                w.created.append((CREATES_JOB[method.name], response.job.id))
    except grpc.RpcError as err:
        if err.code() in BAD:
            shown_request = (" then ".join(shown(m) for m in request) if isinstance(request, list)
                             else shown(request))
            raise AssertionError(f"{service}.{method.name} answered {err.code().name}: {err.details()}\n"
                                 f"request: {shown_request}\n"
                                 f"server traceback:\n{w.bugs.traceback_for(err.details())}")
        return err.code()
    return grpc.StatusCode.OK


def cleanup(w: World) -> None:
    """Cancel every live job and wait for the ones fuzzed calls created to end (a job still
    working on a thread when the process exits aborts it), unload what fuzzed calls loaded,
    restore the fixture dataset."""
    tr, ev, inf, data = (w.stubs[s] for s in ("trainer", "evaluator", "inference", "data"))
    for lister, attr, cancel in ((tr.ListTrainingJobs, "jobs", tr.CancelTrainingJob),
                                 (ev.ListEvaluations, "evaluations", ev.CancelEvaluation)):
        for record in getattr(lister(common_pb2.ListJobsRequest(states=LIVE[1:]), timeout=10), attr):
            _cancel(cancel, record.job.id)
    while w.created:
        (service, get), job_id = w.created.pop()
        getter = getattr(w.stubs[service], get)
        _wait(lambda getter=getter, job_id=job_id: _job_state(getter, job_id) not in LIVE, 180, f"job {job_id} ending")
    for _ in range(3):
        served = inf.ListModels(inference_pb2.ListServedModelsRequest(), timeout=10).models
        extra = [m for m in served if m.name not in FIXTURE_SERVED]
        if not extra:
            break
        for m in sorted(extra, key=lambda m: m.kind != "adapter"):  # adapters before the models they sit on
            if m.state == inference_pb2.SERVED_MODEL_STATE_LOADING:
                _wait(lambda name=m.name: inf.GetServedModel(inference_pb2.GetServedModelRequest(name=name),
                                                             timeout=10).state
                      != inference_pb2.SERVED_MODEL_STATE_LOADING, 120, f"loading {m.name}")
            try:
                if m.kind == "adapter":
                    inf.UnloadAdapter(inference_pb2.UnloadAdapterRequest(name=m.name), timeout=10)
                else:
                    inf.UnloadModel(inference_pb2.UnloadModelRequest(name=m.name), timeout=10)
            except grpc.RpcError:
                pass  # e.g. a FAILED adapter: retried on the next round
    served = {m.name for m in inf.ListModels(inference_pb2.ListServedModelsRequest(), timeout=10).models}
    for name in FIXTURE_SERVED:
        if name not in served:
            _load_served(w.stubs, name)
    try:
        data.GetDataset(data_pb2.GetDatasetRequest(dataset_id=w.dataset.id), timeout=10)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND, err
        from tunesmith.core.records import RecordStore

        RecordStore(w.cluster.runtime.storage, "datasets", data_pb2.Dataset, noun="dataset").put(w.dataset.id, w.dataset)


# -- the test -----------------------------------------------------------------------------------
@pytest.mark.timeout(600)
@pytest.mark.parametrize("service,method", RPCS, ids=RPC_IDS)
def test_no_request_gets_internal(world, service, method):
    rpc_id = f"{service}.{method.name}"
    fuzz = Fuzz(hints_for(world))
    deadlines: list[str] = []
    codes: dict[str, int] = {}

    def check(request):
        note(" then ".join(shown(m) for m in request) if isinstance(request, list) else shown(request))
        try:
            code = call(world, service, method, request)
            codes[code.name] = codes.get(code.name, 0) + 1
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                deadlines.append(shown(request[0] if isinstance(request, list) else request))
        finally:
            cleanup(world)

    for request in regressions_for(world).get(rpc_id, []):
        check = example(request=request)(check)
    check = given(request=request_strategy(world, fuzz, rpc_id, method))(check)
    check = settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                            HealthCheck.data_too_large, HealthCheck.filter_too_much])(check)
    check()
    print(f"{rpc_id}: {codes}")
    assert len(deadlines) <= MAX_DEADLINES, (
        f"{rpc_id} ran past its {CALL_TIMEOUT:g} s deadline {len(deadlines)} times: {deadlines}")
