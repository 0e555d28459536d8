"""The SDK against real gRPC servers started in-process on localhost (no mocks).

The servers are small subclasses of the generated servicers; they stand in for the real
services so the SDK's own behaviour (conversion, error mapping, retries, streaming,
readiness) is tested over a real channel.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import socket
import threading
import time
from concurrent import futures

import grpc
import pytest

from tunesmith.api.common.v1 import common_pb2
from tunesmith.api.data.v1 import data_pb2, data_pb2_grpc
from tunesmith.api.evaluator.v1 import evaluator_pb2_grpc
from tunesmith.api.inference.v1 import inference_pb2, inference_pb2_grpc
from tunesmith.api.trainer.v1 import trainer_pb2_grpc
from tunesmith.client import (
    AlreadyExistsError,
    DataClient,
    DeadlineExceededError,
    InferenceClient,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PluginInfo,
    ServiceStatus,
    Tunesmith,
    TunesmithClientError,
    TunesmithConnectionError,
    UnavailableError,
    UnimplementedError,
    connect,
    wait_ready,
)
from tunesmith.client.connection import SERVICES, channel_options, service_config

pytestmark = pytest.mark.timeout(60)


# -- servers ---------------------------------------------------------------------------------


def abort(context, code: grpc.StatusCode, message: str, field: str | None = None, reason: str = "") -> None:
    """Fail the call as a Tunesmith service does: a google.rpc.Status with BadRequest/ErrorInfo."""
    from google.protobuf import any_pb2
    from google.rpc import error_details_pb2, status_pb2
    from grpc_status import rpc_status

    details = []
    if field:
        bad = error_details_pb2.BadRequest()
        bad.field_violations.add(field=field, description=message)
        details.append(any_pb2.Any())
        details[-1].Pack(bad)
    if reason:
        details.append(any_pb2.Any())
        details[-1].Pack(error_details_pb2.ErrorInfo(reason=reason, domain="tunesmith.dev", metadata={"job_id": "j-1"}))
    text = f"{field}: {message}" if field else message
    context.abort_with_status(rpc_status.to_status(status_pb2.Status(code=code.value[0], message=text, details=details)))


class FakeDataService(data_pb2_grpc.DataServiceServicer):
    """GetStatus (optionally failing the first calls with UNAVAILABLE), GetDataset errors,
    UploadDataset that records what it got, StreamJobEvents for job-1, a slow statistics call."""

    def __init__(self, fail_status_times: int = 0):
        self.fail_status_times = fail_status_times
        self.status_calls = 0
        self.uploads: list[tuple[data_pb2.UploadHeader, list[int], bytes]] = []
        self._lock = threading.Lock()

    def GetStatus(self, request, context):
        with self._lock:
            self.status_calls += 1
            calls = self.status_calls
        if calls <= self.fail_status_times:
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        return common_pb2.ServiceStatus(
            service="data",
            version="1.2.3",
            plugins=[
                common_pb2.PluginInfo(
                    name="builtin-templates", version="1.2.3", hooks=["register_templates"], source="builtin"
                ),
                common_pb2.PluginInfo(
                    name="acme-csv", version="0.4", hooks=["register_readers", "register_validators"],
                    source="entrypoint",
                ),
            ],
            registered={
                "templates": common_pb2.NameList(names=["chat", "classification"]),
                "readers": common_pb2.NameList(names=["csv"]),
            },
            info={"storage_root": "/srv/tunesmith", "device": "cpu"},
        )

    def GetDataset(self, request, context):
        if request.dataset_id == "reused":
            abort(context, grpc.StatusCode.ALREADY_EXISTS, "key used for job j-1", "idempotency_key",
                  reason="IDEMPOTENCY_KEY_REUSED")
        if request.dataset_id == "crash":
            context.abort(grpc.StatusCode.INTERNAL, "internal error (reference 0a1b2c)")
        if not request.dataset_id:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "must not be empty", "dataset_id")
        abort(context, grpc.StatusCode.NOT_FOUND, f"no dataset '{request.dataset_id}'", "dataset_id")

    def UploadDataset(self, request_iterator, context):
        first = next(request_iterator)
        if first.WhichOneof("part") != "header":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "header: the first message must be the header")
        sizes, data = [], bytearray()
        for part in request_iterator:
            if part.WhichOneof("part") != "chunk":
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "chunk: only one header is allowed")
            sizes.append(len(part.chunk))
            data.extend(part.chunk)
        self.uploads.append((first.header, sizes, bytes(data)))
        if hashlib.sha256(data).hexdigest() != first.header.sha256:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "sha256: does not match the upload")
        return data_pb2.RegisterDatasetResponse(
            dataset=data_pb2.Dataset(id="ds-" + first.header.sha256[:8], name=first.header.spec.name),
            report=common_pb2.ValidationReport(source=first.header.filename, rows_read=3, rows_accepted=3),
        )

    def GetDatasetStatistics(self, request, context):
        time.sleep(2)
        return data_pb2.DatasetStatistics()

    def StreamDataJobEvents(self, request, context):
        if request.job_id != "job-1":
            abort(context, grpc.StatusCode.NOT_FOUND, f"no job '{request.job_id}'", "job_id")
        for sequence in range(max(request.from_sequence, 1), 4):
            yield common_pb2.JobEvent(
                job_id=request.job_id, sequence=sequence, progress=common_pb2.Progress(step=sequence)
            )


class FakeInferenceService(inference_pb2_grpc.InferenceServiceServicer):
    """Generate echoes each prompt with the sampling settings; GenerateStream yields words and
    records when the call ends."""

    def __init__(self):
        self.stream_ended = threading.Event()

    @staticmethod
    def _echo(prompt: inference_pb2.Prompt) -> str:
        if prompt.WhichOneof("kind") == "text":
            return f"text={prompt.text}"
        return "chat=" + "|".join(f"{inference_pb2.ChatRole.Name(m.role).removeprefix('CHAT_ROLE_').lower()}:{m.content}" for m in prompt.chat.messages)

    def Generate(self, request, context):
        s = request.sampling
        suffix = f" [t={s.temperature:g} n={s.max_new_tokens} stop={list(s.stop)}]"
        return inference_pb2.GenerateResponse(
            model=request.model,
            backend="echo",
            completions=[inference_pb2.Completion(text=self._echo(p) + suffix, finish_reason=inference_pb2.FINISH_REASON_STOP)
                         for p in request.prompts],
        )

    def GenerateStream(self, request, context):
        context.add_callback(self.stream_ended.set)
        words = self._echo(request.prompts[0]).split("=", 1)[1].split()
        if request.model == "endless":
            words = ["tick"] * 10_000
        for word in words:
            if not context.is_active():
                return
            yield inference_pb2.GenerateChunk(delta=word + " ")
            if request.model == "endless":
                time.sleep(0.01)
        yield inference_pb2.GenerateChunk(finish_reason=inference_pb2.FINISH_REASON_STOP, completion_tokens=len(words))


@pytest.fixture
def serve():
    """serve(data=..., inference=...) starts a real server on 127.0.0.1 and returns its address."""
    servers: list[grpc.Server] = []

    def start(data=None, inference=None, trainer=None, evaluator=None) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        if data is not None:
            data_pb2_grpc.add_DataServiceServicer_to_server(data, server)
        if inference is not None:
            inference_pb2_grpc.add_InferenceServiceServicer_to_server(inference, server)
        if trainer is not None:
            trainer_pb2_grpc.add_TrainerServiceServicer_to_server(trainer, server)
        if evaluator is not None:
            evaluator_pb2_grpc.add_EvaluatorServiceServicer_to_server(evaluator, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- service config --------------------------------------------------------------------------


def test_service_config_retries_unavailable_for_all_four_services():
    config = service_config(retries=4)
    (method_config,) = config["methodConfig"]
    assert {n["service"] for n in method_config["name"]} == {
        "tunesmith.api.data.v1.DataService",
        "tunesmith.api.trainer.v1.TrainerService",
        "tunesmith.api.evaluator.v1.EvaluatorService",
        "tunesmith.api.inference.v1.InferenceService",
    } == set(SERVICES.values())
    policy = method_config["retryPolicy"]
    assert policy["maxAttempts"] == 5
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert policy["backoffMultiplier"] > 1
    assert policy["initialBackoff"].endswith("s") and policy["maxBackoff"].endswith("s")
    assert service_config(retries=9)["methodConfig"][0]["retryPolicy"]["maxAttempts"] == 5  # gRPC's cap
    assert "retryPolicy" not in service_config(retries=0)["methodConfig"][0]
    with pytest.raises(ValueError):
        service_config(retries=-1)

    options = dict(channel_options())
    assert json.loads(options["grpc.service_config"]) == config
    assert options["grpc.max_send_message_length"] == options["grpc.max_receive_message_length"] == 64 * 1024 * 1024
    assert options["grpc.keepalive_time_ms"] > 0


# -- status ----------------------------------------------------------------------------------


def test_status_converts_the_proto(serve):
    address = serve(data=FakeDataService())
    with DataClient(address) as client:
        status = client.status()
    assert status == ServiceStatus(
        service="data",
        version="1.2.3",
        plugins=[
            PluginInfo("builtin-templates", "1.2.3", ["register_templates"], "builtin"),
            PluginInfo("acme-csv", "0.4", ["register_readers", "register_validators"], "entrypoint"),
        ],
        registered={"readers": ["csv"], "templates": ["chat", "classification"]},
        info={"device": "cpu", "storage_root": "/srv/tunesmith"},
    )
    assert status.plugin("acme-csv").source == "entrypoint"
    assert status.plugin("missing") is None
    assert isinstance(status.plugins[0].hooks, list)
    with pytest.raises(dataclasses.FrozenInstanceError):
        status.version = "2"  # type: ignore[misc]


def test_client_accepts_a_channel_and_leaves_it_open(serve):
    address = serve(data=FakeDataService())
    channel = connect(address, timeout=5)
    client = DataClient(channel)
    assert client.timeout == 5 and client.address == address
    client.close()  # does not close a channel it was given
    assert client.status().service == "data"
    channel.close()


# -- errors ----------------------------------------------------------------------------------


def test_not_found_is_raised_with_the_message(serve):
    client = DataClient(serve(data=FakeDataService()))
    with pytest.raises(NotFoundError) as info:
        client.get_dataset("x")
    err = info.value
    assert str(err) == "dataset_id: no dataset 'x'"
    assert err.field == "dataset_id"
    assert err.message == "no dataset 'x'"
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert not isinstance(err, grpc.RpcError)
    assert err.__cause__ is None and err.__suppress_context__  # the raw RpcError is not shown
    assert isinstance(err.rpc_error, grpc.RpcError)


def test_invalid_argument_gets_the_field(serve):
    client = DataClient(serve(data=FakeDataService()))
    with pytest.raises(InvalidArgumentError) as info:
        client.get_dataset("")
    assert info.value.field == "dataset_id"
    assert info.value.message == "must not be empty"
    assert isinstance(info.value, TunesmithClientError)


def test_error_info_reason_and_metadata_and_internal_errors(serve):
    client = DataClient(serve(data=FakeDataService()))
    with pytest.raises(AlreadyExistsError) as info:
        client.get_dataset("reused")
    assert (info.value.field, info.value.reason, info.value.metadata) == (
        "idempotency_key", "IDEMPOTENCY_KEY_REUSED", {"job_id": "j-1"})
    assert [(v.field, v.description) for v in info.value.violations] == [("idempotency_key", "key used for job j-1")]
    with pytest.raises(InternalError) as crash:
        client.get_dataset("crash")
    assert crash.value.field is None and crash.value.violations == [] and crash.value.reason is None
    assert str(crash.value) == "internal error (reference 0a1b2c)"


def test_against_the_real_server_bootstrap():
    """The SDK with tunesmith.core.server's error-mapping interceptor (skipped where the
    services package is not installed)."""
    server_mod = pytest.importorskip("tunesmith.core.server")
    core_errors = pytest.importorskip("tunesmith.core.errors")

    class Raising(data_pb2_grpc.DataServiceServicer):
        def GetDataset(self, request, context):
            if request.dataset_id == "bad":
                raise core_errors.InvalidArgument("must be positive", field="spec.max_train_rows")
            raise core_errors.NotFound(f"no dataset '{request.dataset_id}'", field="dataset_id")

    running = server_mod.start_server(
        "data", Raising(), data_pb2_grpc.add_DataServiceServicer_to_server, port=0, host="127.0.0.1"
    )
    try:
        client = DataClient(f"127.0.0.1:{running.port}")
        client.wait_ready(5)
        with pytest.raises(InvalidArgumentError) as info:
            client.get_dataset("bad")
        assert (info.value.field, info.value.message) == ("spec.max_train_rows", "must be positive")
        with pytest.raises(NotFoundError) as missing:
            client.get_dataset("x")
        assert str(missing.value) == "dataset_id: no dataset 'x'" and missing.value.field == "dataset_id"
        client.close()
    finally:
        running.stop(0)


def test_errors_in_a_server_stream_are_translated(serve):
    client = DataClient(serve(data=FakeDataService()))
    with pytest.raises(NotFoundError) as info:
        list(client.events("nope"))
    assert info.value.field == "job_id"


def test_unimplemented_rpc_and_the_facade(serve):
    address = serve(data=FakeDataService(), inference=FakeInferenceService(),
                    trainer=trainer_pb2_grpc.TrainerServiceServicer())
    with Tunesmith(data=address, trainer=address, evaluator=address, inference=address) as ts:
        ts.wait_ready(timeout=5)
        assert ts.data.status().service == "data"
        with pytest.raises(UnimplementedError):
            ts.trainer.status()  # the bare generated servicer answers UNIMPLEMENTED
        with pytest.raises(UnimplementedError):
            ts.evaluator.status()  # no EvaluatorService on this server at all


def test_local_uses_the_default_ports():
    ts = Tunesmith.local()
    assert {name: c.address for name, c in ts.clients.items()} == {
        "data": "localhost:50051",
        "trainer": "localhost:50052",
        "evaluator": "localhost:50053",
        "inference": "localhost:50054",
    }
    ts.close()


def test_deadline_exceeded(serve):
    client = DataClient(serve(data=FakeDataService()), timeout=0.2)
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        client.get_statistics("any")
    assert time.monotonic() - started < 1.5


# -- connection ------------------------------------------------------------------------------


def test_wait_ready_on_a_dead_port_fails_fast_with_a_clear_message():
    address = f"127.0.0.1:{free_port()}"
    channel = connect(address)
    started = time.monotonic()
    with pytest.raises(TunesmithConnectionError) as info:
        wait_ready(channel, 0.5)
    assert time.monotonic() - started < 3
    assert str(info.value) == (
        f"cannot reach {address} within 0.5s: is the service running? try `tunesmith up`"
    )
    assert isinstance(info.value, UnavailableError)
    channel.close()


def test_wait_ready_on_a_live_server(serve):
    address = serve(data=FakeDataService())
    with connect(address) as channel:
        wait_ready(channel, 5)
    DataClient(address).wait_ready(5)


def test_call_to_a_dead_port_raises_a_connection_error_not_rpc_error():
    address = f"127.0.0.1:{free_port()}"
    client = DataClient(address, retries=0, timeout=5)
    with pytest.raises(TunesmithConnectionError) as info:
        client.status()
    assert f"cannot reach {address}" in str(info.value)
    assert "tunesmith up" in str(info.value)
    client.close()


def test_unavailable_is_retried_and_the_call_succeeds(serve):
    service = FakeDataService(fail_status_times=1)
    client = DataClient(serve(data=service))  # retries=4 by default
    assert client.status().version == "1.2.3"
    assert service.status_calls == 2


def test_without_retries_unavailable_reaches_the_caller(serve):
    service = FakeDataService(fail_status_times=1)
    client = DataClient(serve(data=service), retries=0)
    with pytest.raises(UnavailableError) as info:
        client.status()
    assert not isinstance(info.value, TunesmithConnectionError)  # the server answered
    assert str(info.value) == "warming up"
    assert service.status_calls == 1


# -- data ------------------------------------------------------------------------------------


def test_upload_streams_a_header_then_1mib_chunks(serve, tmp_path):
    service = FakeDataService()
    client = DataClient(serve(data=service))
    payload = bytes(range(256)) * (10 * 1024)  # 2.5 MiB
    path = tmp_path / "tickets.csv"
    path.write_bytes(payload)
    result = client.upload_dataset(path, {"name": "tickets", "schema": "SCHEMA_CLASSIFICATION"})
    header, sizes, data = service.uploads[0]
    assert header.filename == "tickets.csv"
    assert header.spec.name == "tickets" and header.spec.schema == data_pb2.SCHEMA_CLASSIFICATION
    assert header.size_bytes == len(payload)
    assert header.sha256 == hashlib.sha256(payload).hexdigest()
    assert sizes == [1024 * 1024, 1024 * 1024, len(payload) - 2 * 1024 * 1024]
    assert data == payload
    assert result.dataset.name == "tickets" and result.report.rows_accepted == 3

    with pytest.raises(ValueError):
        client.upload_dataset(path, {"no_such_field": 1})
    with pytest.raises(FileNotFoundError):
        client.upload_dataset(tmp_path / "missing.csv")


def test_events_replay_from_a_sequence(serve):
    client = DataClient(serve(data=FakeDataService()))
    assert [e.sequence for e in client.events("job-1")] == [1, 2, 3]
    assert [e.progress.step for e in client.events("job-1", from_sequence=2)] == [2, 3]


# -- inference -------------------------------------------------------------------------------


def test_generate_chat_and_stream(serve):
    service = FakeInferenceService()
    client = InferenceClient(serve(inference=service))
    chat = [{"role": "user", "content": "hi"}]
    assert client.generate("m", ["one", chat], temperature=0.5, max_new_tokens=7, stop="\n") == [
        "text=one [t=0.5 n=7 stop=['\\n']]",
        "chat=user:hi [t=0.5 n=7 stop=['\\n']]",
    ]
    assert client.generate("m", "solo") == ["text=solo [t=0 n=0 stop=[]]"]
    assert client.chat("m", "hello", system="be brief", sampling={"temperature": 0.2}) == (
        "chat=system:be brief|user:hello [t=0.2 n=0 stop=[]]"
    )
    assert client.chat("m", [("user", "a"), ("assistant", "b"), ("user", "c")]).startswith(
        "chat=user:a|assistant:b|user:c"
    )
    assert "".join(client.stream("m", "the quick fox")) == "the quick fox "
    assert "".join(client.stream("m", chat)) == "user:hi "

    with pytest.raises(TypeError, match="unknown sampling"):
        client.generate("m", "x", temprature=1.0)
    with pytest.raises(TypeError, match="list of messages"):
        client.generate("m", chat)  # a bare list of messages is ambiguous for generate()


def test_breaking_out_of_a_stream_cancels_it(serve):
    service = FakeInferenceService()
    client = InferenceClient(serve(inference=service))
    stream = client.stream("endless", "go")
    assert next(stream) == "tick "
    stream.close()
    assert service.stream_ended.wait(5), "the server never saw the stream end"
