"""The committed generated code must match the protos."""
import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_fresh(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), str(tmp_path)], check=True,
                   capture_output=True)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*.py*"))
    committed_root = ROOT / "clients" / "python"
    committed = sorted(p.relative_to(committed_root) for p in (committed_root / "tunesmith" / "api").rglob("*_pb2*.py*"))
    assert fresh == committed, "generated file set differs: run `make protos`"
    stale = [str(p) for p in fresh if not filecmp.cmp(tmp_path / p, committed_root / p, shallow=False)]
    assert not stale, f"stale generated code (run `make protos`): {stale}"


def test_every_service_has_get_status():
    from tunesmith.api.data.v1 import data_pb2
    from tunesmith.api.evaluator.v1 import evaluator_pb2
    from tunesmith.api.inference.v1 import inference_pb2
    from tunesmith.api.trainer.v1 import trainer_pb2

    for module in (data_pb2, trainer_pb2, evaluator_pb2, inference_pb2):
        (service,) = module.DESCRIPTOR.services_by_name.values()
        assert "GetStatus" in service.methods_by_name, service.full_name
        assert service.full_name.startswith("tunesmith.api.") and ".v1." in service.full_name
