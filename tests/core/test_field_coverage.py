"""No silently ignored field: every field of every v1 request message is either read by the
service code or refused when set (tunesmith.core.unimplemented.REFUSED), and every refused field
has a row in the table-driven test that proves the running service refuses it.

"Read" is checked statically: the field's name must be accessed as an attribute (``.name``) or by
HasField/WhichOneof in the code of the service that owns the message's proto package (or in
``core``, for the common package). A field that nothing reads, like v1's ``dpo_beta`` was, fails.
"""
from __future__ import annotations

import ast
from pathlib import Path

from tunesmith.api.common.v1 import common_pb2
from tunesmith.api.data.v1 import data_pb2
from tunesmith.api.evaluator.v1 import evaluator_pb2
from tunesmith.api.inference.v1 import inference_pb2
from tunesmith.api.trainer.v1 import trainer_pb2
from tunesmith.core.unimplemented import REFUSED, UNIMPLEMENTED_RPCS

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services" / "tunesmith"
MODULES = {"data": data_pb2, "trainer": trainer_pb2, "evaluator": evaluator_pb2, "inference": inference_pb2}


def _names_read(folder: Path) -> set[str]:
    """Attribute names read, and string arguments of HasField/ClearField/WhichOneof, in .py files."""
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in ("HasField", "WhichOneof") and node.args and isinstance(node.args[0], ast.Constant):
                names.add(str(node.args[0].value))
    return names


def _request_messages() -> dict[str, set[str]]:
    """message full name -> the services whose implemented RPCs take it (directly or nested)."""
    owners: dict[str, set[str]] = {}

    def walk(desc, service: str) -> None:
        if not desc.full_name.startswith("tunesmith.") or service in owners.get(desc.full_name, set()):
            return
        owners.setdefault(desc.full_name, set()).add(service)
        refused = REFUSED.get(desc.full_name, {})
        for field in desc.fields:
            if field.name in refused:
                continue  # refused when set: what is inside it is refused with it
            if field.message_type is not None and not field.message_type.GetOptions().map_entry:
                walk(field.message_type, service)

    for service, module in MODULES.items():
        for svc in module.DESCRIPTOR.services_by_name.values():
            for method in svc.methods:
                if method.full_name not in UNIMPLEMENTED_RPCS:
                    walk(method.input_type, service)
    return owners


def _descriptor(full_name: str):
    for module in (common_pb2, *MODULES.values()):
        pkg = module.DESCRIPTOR.package
        if full_name.startswith(pkg + "."):
            return module.DESCRIPTOR.message_types_by_name.get(full_name[len(pkg) + 1:])
    return None


def test_every_request_field_is_read_or_refused():
    core = _names_read(SERVICES / "core")
    read = {s: _names_read(SERVICES / s) | core for s in MODULES}
    unread = []
    for full_name, services in sorted(_request_messages().items()):
        desc = _descriptor(full_name)
        assert desc is not None, full_name
        refused = REFUSED.get(full_name, {})
        for field in desc.fields:
            if field.name in refused:
                continue
            if not any(field.name in read[s] for s in services):
                unread.append(f"{full_name}.{field.name} (used by the {', '.join(sorted(services))} service)")
    assert not unread, "request fields that no service code reads and REFUSED does not list:\n" + "\n".join(unread)


def test_refused_fields_exist_and_each_has_a_service_level_test():
    from tests.integration.test_request_validation import CASES

    refused_paths = {field for *_, code, field in CASES if code.name == "UNIMPLEMENTED" and field}
    for full_name, fields in REFUSED.items():
        desc = _descriptor(full_name)
        assert desc is not None, f"REFUSED names an unknown message {full_name}"
        for name in fields:
            assert name in desc.fields_by_name, f"REFUSED names an unknown field {full_name}.{name}"
            assert any(p == name or p.endswith(f".{name}") for p in refused_paths), \
                f"no table-driven case proves {full_name}.{name} is refused by the running service"


def test_the_check_can_fail():
    """A field name nothing reads is reported (guards the checker itself)."""
    assert "dpo_beta" not in _names_read(SERVICES)
    assert "learning_rate" in _names_read(SERVICES / "trainer")
