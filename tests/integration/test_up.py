"""`tunesmith up`: four real server processes, health, reflection, status with plugins, SIGTERM."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tunesmith.api.common.v1 import common_pb2
from tunesmith.core.server import SERVICE_NAMES

from .conftest import STUBS


def free_base_port(n=4):
    """A base port with base..base+n-1 free, and base+1003 (the inference HTTP API) too."""
    for base in range(56000, 60000, 10):
        ok = True
        for p in [*range(base, base + n), base + 1003]:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", p)) == 0:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free ports")


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    base = free_base_port()
    storage = tmp_path_factory.mktemp("up-storage")
    proc = subprocess.Popen([sys.executable, "-m", "tunesmith.cli.main", "up", "--base-port", str(base),
                             "--storage", str(storage)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "SERVING" in line:
            break
    assert lines and "SERVING" in lines[-1], lines
    yield base, lines, proc
    if proc.poll() is None:
        proc.terminate()
        proc.wait(30)


def test_up_prints_the_four_addresses(up):
    base, lines, _ = up
    for i, service in enumerate(SERVICE_NAMES):
        assert any(line.startswith(service) and f"localhost:{base + i}" in line for line in lines), lines


def test_up_serves_the_openai_compatible_http_api(up):
    """The inference service's HTTP API (at the inference port + 1000 with --base-port)."""
    import urllib.request

    base, lines, _ = up
    http = base + 3 + 1000
    assert any(line.startswith("http") and f"localhost:{http}/v1" in line for line in lines), lines
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/v1/models", timeout=10) as r:
        assert r.status == 200 and json.loads(r.read()) == {"object": "list", "data": []}


@pytest.mark.parametrize("index,service", list(enumerate(SERVICE_NAMES)))
def test_each_service_is_healthy_reflects_and_reports_plugins(up, index, service):
    base = up[0]
    with grpc.insecure_channel(f"localhost:{base + index}") as ch:
        status = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAMES[service]), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        (resp,) = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
        assert SERVICE_NAMES[service] in {s.name for s in resp.list_services_response.service}
        st = STUBS[service](ch).GetStatus(common_pb2.GetStatusRequest(), timeout=10)
    assert st.service == service
    plugins = {p.name: p for p in st.plugins}
    assert plugins["tunesmith_builtin.peft_lora"].hooks == ["register_peft_methods"]
    assert plugins["tunesmith_builtin.peft_lora"].source == "builtin"
    assert "lora" in st.registered["peft_methods"].names
    assert "exact_match" in st.registered["benchmarks"].names


def test_status_command_lists_every_service(up):
    """`tunesmith status` (through the SDK) against the four servers `up` started."""
    import json

    base = up[0]
    done = subprocess.run([sys.executable, "-m", "tunesmith.cli.main", "status", "--base-port", str(base)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) == set(SERVICE_NAMES)
    assert all("tunesmith_builtin.peft_lora" in {p["name"] for p in r["plugins"]} for r in report.values())
    missing = subprocess.run([sys.executable, "-m", "tunesmith.cli.main", "status", "--base-port", "1"],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "error" in json.loads(missing.stdout)["data"]


def test_sigterm_stops_everything(up):
    base, _, proc = up
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    with grpc.insecure_channel(f"localhost:{base}") as ch:
        with pytest.raises(grpc.RpcError):
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)


@pytest.mark.parametrize("argv,message", [
    (["serve", "data", "--load", "x=y"], "for the inference service only"),
    (["up", "--enable-adapters"], "add --load NAME=MODEL"),
    (["serve", "inference", "--load-backend", "vllm"], "add --load NAME=MODEL"),
])
def test_load_options_that_would_be_ignored_are_refused(argv, message):
    r = subprocess.run([sys.executable, "-m", "tunesmith.cli.main", *argv], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and message in r.stderr
