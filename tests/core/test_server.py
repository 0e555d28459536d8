"""The shared server bootstrap: error mapping, health, reflection, graceful stop."""
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tunesmith.api.common.v1 import common_pb2
from tunesmith.api.data.v1 import data_pb2, data_pb2_grpc
from tunesmith.core import errors
from tunesmith.core.server import FIELD_METADATA_KEY, start_server


class Raising(data_pb2_grpc.DataServiceServicer):
    """Raises the domain error named by the request's dataset_id."""

    ERRORS = {
        "invalid": errors.InvalidArgument("must be positive", field="spec.max_train_rows"),
        "missing": errors.NotFound("no dataset with id 'x'", field="dataset_id"),
        "state": errors.FailedPrecondition("job is already SUCCEEDED", field="job_id"),
        "exists": errors.AlreadyExists("name taken", field="name"),
        "later": errors.Unimplemented("not built yet"),
        "bug": ZeroDivisionError("division by zero"),
    }

    def GetDataset(self, request, context):
        raise self.ERRORS[request.dataset_id]

    def StreamJobEvents(self, request, context):
        yield common_pb2.JobEvent(job_id="j", sequence=1)
        raise errors.NotFound("job vanished", field="job_id")


@pytest.fixture(scope="module")
def server():
    running = start_server("data", Raising(), data_pb2_grpc.add_DataServiceServicer_to_server, port=0, host="127.0.0.1")
    yield running
    running.stop(0)


@pytest.fixture
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.mark.parametrize("which,code,field", [
    ("invalid", grpc.StatusCode.INVALID_ARGUMENT, "spec.max_train_rows"),
    ("missing", grpc.StatusCode.NOT_FOUND, "dataset_id"),
    ("state", grpc.StatusCode.FAILED_PRECONDITION, "job_id"),
    ("exists", grpc.StatusCode.ALREADY_EXISTS, "name"),
    ("later", grpc.StatusCode.UNIMPLEMENTED, None),
    ("bug", grpc.StatusCode.INTERNAL, None),
])
def test_domain_errors_map_to_status_codes(channel, which, code, field):
    stub = data_pb2_grpc.DataServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.GetDataset(data_pb2.GetDatasetRequest(dataset_id=which), timeout=5)
    assert err.value.code() == code
    if field:
        assert err.value.details().startswith(f"{field}: ")
        assert (FIELD_METADATA_KEY, field) in tuple(err.value.trailing_metadata())
    if which == "bug":
        assert "ZeroDivisionError" in err.value.details()


def test_streaming_errors_are_mapped_after_partial_results(channel):
    stub = data_pb2_grpc.DataServiceStub(channel)
    got = []
    with pytest.raises(grpc.RpcError) as err:
        for ev in stub.StreamJobEvents(common_pb2.JobEventsRequest(job_id="j"), timeout=5):
            got.append(ev.sequence)
    assert got == [1]
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_and_reflection(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "tunesmith.api.data.v1.DataService"):
        assert health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    (resp,) = refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    names = {s.name for s in resp.list_services_response.service}
    assert "tunesmith.api.data.v1.DataService" in names and "grpc.health.v1.Health" in names


def test_stop_reports_not_serving_first():
    running = start_server("data", Raising(), data_pb2_grpc.add_DataServiceServicer_to_server, port=0, host="127.0.0.1")
    running.health.enter_graceful_shutdown()
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    running.stop(0)
