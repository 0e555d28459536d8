"""The shared server bootstrap: error mapping, health, reflection, graceful stop."""
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from tunesmith.api.common.v1 import common_pb2
from tunesmith.api.data.v1 import data_pb2, data_pb2_grpc
from tunesmith.core import errors
from tunesmith.core.server import start_server


class Raising(data_pb2_grpc.DataServiceServicer):
    """Raises the domain error named by the request's dataset_id."""

    ERRORS = {
        "invalid": errors.InvalidArgument("must be positive", field="spec.max_train_rows"),
        "missing": errors.NotFound("no dataset with id 'x'", field="dataset_id"),
        "state": errors.FailedPrecondition("job is already SUCCEEDED", field="job_id"),
        "exists": errors.AlreadyExists("name taken", field="name"),
        "later": errors.Unimplemented("not built yet"),
        "bug": ZeroDivisionError("division by zero"),
        "many": errors.InvalidArgument("must be in (0, 1]", field="spec.hyperparameters.learning_rate",
                                       violations=[errors.FieldViolation("spec.hyperparameters.learning_rate", "must be in (0, 1]"),
                                                   errors.FieldViolation("spec.hyperparameters.epochs", "must be >= 1")]),
        "rows": errors.DataValidationError("tickets.csv: 2 rows are invalid", report={
            "source": "tickets.csv", "rows_read": 9, "rows_rejected": 2,
            "issues": [{"row": 7, "field": "text", "code": "empty_value", "message": "is empty"},
                       {"row": 8, "field": "label", "code": "missing_field", "message": "is missing"}],
            "counts_by_code": {"empty_value": 1, "missing_field": 1}}),
    }

    def GetDataset(self, request, context):
        raise self.ERRORS[request.dataset_id]

    def StreamDataJobEvents(self, request, context):
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


def _details(err: grpc.RpcError) -> dict:
    status = rpc_status.from_call(err)
    out = {}
    for d in status.details:
        for cls in (error_details_pb2.BadRequest, error_details_pb2.ErrorInfo, common_pb2.ValidationReport):
            if d.Is(cls.DESCRIPTOR):
                msg = cls()
                d.Unpack(msg)
                out[cls.__name__] = msg
    return out


@pytest.mark.parametrize("which,code,field,reason", [
    ("invalid", grpc.StatusCode.INVALID_ARGUMENT, "spec.max_train_rows", "INVALID_ARGUMENT"),
    ("missing", grpc.StatusCode.NOT_FOUND, "dataset_id", "NOT_FOUND"),
    ("state", grpc.StatusCode.FAILED_PRECONDITION, "job_id", "FAILED_PRECONDITION"),
    ("exists", grpc.StatusCode.ALREADY_EXISTS, "name", "ALREADY_EXISTS"),
    ("later", grpc.StatusCode.UNIMPLEMENTED, None, "UNIMPLEMENTED"),
    ("bug", grpc.StatusCode.INTERNAL, None, "INTERNAL"),
])
def test_domain_errors_map_to_status_codes_with_standard_details(channel, which, code, field, reason):
    stub = data_pb2_grpc.DataServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.GetDataset(data_pb2.GetDatasetRequest(dataset_id=which), timeout=5)
    assert err.value.code() == code
    details = _details(err.value)
    assert details["ErrorInfo"].reason == reason and details["ErrorInfo"].domain == errors.ERROR_DOMAIN
    if field:
        assert err.value.details().startswith(f"{field}: ")
        assert [v.field for v in details["BadRequest"].field_violations] == [field]
    else:
        assert "BadRequest" not in details
    if which == "bug":  # a bug never leaks its exception text; the reference finds it in the log
        assert "ZeroDivisionError" not in err.value.details() and "division" not in err.value.details()
        assert details["ErrorInfo"].metadata["reference"] in err.value.details()


def test_every_violation_travels_with_its_field_path(channel):
    stub = data_pb2_grpc.DataServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.GetDataset(data_pb2.GetDatasetRequest(dataset_id="many"), timeout=5)
    violations = _details(err.value)["BadRequest"].field_violations
    assert [(v.field, v.description) for v in violations] == [
        ("spec.hyperparameters.learning_rate", "must be in (0, 1]"), ("spec.hyperparameters.epochs", "must be >= 1")]


def test_a_refused_data_file_sends_its_per_row_report(channel):
    stub = data_pb2_grpc.DataServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.GetDataset(data_pb2.GetDatasetRequest(dataset_id="rows"), timeout=5)
    details = _details(err.value)
    assert details["ErrorInfo"].reason == "INVALID_DATASET"
    report = details["ValidationReport"]
    assert (report.source, report.rows_read, report.rows_rejected) == ("tickets.csv", 9, 2)
    assert [(i.row, i.field, i.code) for i in report.issues] == [(7, "text", "empty_value"), (8, "label", "missing_field")]
    assert dict(report.counts_by_code) == {"empty_value": 1, "missing_field": 1}


def test_streaming_errors_are_mapped_after_partial_results(channel):
    stub = data_pb2_grpc.DataServiceStub(channel)
    got = []
    with pytest.raises(grpc.RpcError) as err:
        for ev in stub.StreamDataJobEvents(common_pb2.JobEventsRequest(job_id="j"), timeout=5):
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
