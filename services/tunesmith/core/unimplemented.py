"""The v1 fields that are designed but not built yet: one table for the whole API.

A request that sets one of them is refused with UNIMPLEMENTED naming the field path, never
silently ignored. When an issue builds a field, it removes the field's row here. The field
coverage test (tests/core/test_field_coverage.py) checks that every request field is either
read by the service code or listed here.
"""
from __future__ import annotations

from typing import Any, Callable

from google.protobuf.message import Message

from tunesmith.core.errors import Unimplemented

#: message full name -> field name -> (refused when the value satisfies this, why).
REFUSED: dict[str, dict[str, tuple[Callable[[Any], bool], str]]] = {
}

#: Whole RPCs that answer UNIMPLEMENTED (their request fields need no row above).
UNIMPLEMENTED_RPCS: frozenset[str] = frozenset({
    "tunesmith.api.trainer.v1.TrainerService.CreateSweep",
})


def refuse_unimplemented(msg: Message, path: str = "") -> None:
    """Raise Unimplemented for the first field of `msg` (recursively) that REFUSED lists and
    the request sets, naming its path (e.g. "spec.hyperparameters.packing")."""
    table = REFUSED.get(msg.DESCRIPTOR.full_name, {})
    for field, value in msg.ListFields():
        where = f"{path}.{field.name}" if path else field.name
        rule = table.get(field.name)
        if rule is not None:
            refused, why = rule
            if refused(value):
                raise Unimplemented(f"{why}; leave {where} unset", field=where, code="field_unimplemented")
        if field.message_type is None or field.message_type.GetOptions().map_entry:
            continue
        if field.is_repeated:
            for i, item in enumerate(value):
                refuse_unimplemented(item, f"{where}[{i}]")
        elif field.message_type.full_name.startswith("tunesmith."):
            refuse_unimplemented(value, where)
