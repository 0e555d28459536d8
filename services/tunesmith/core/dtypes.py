"""Dtype names: the one mapping between the proto enum (tunesmith.api.common.v1.Dtype) and the
names the training and inference code use ("float32", "bfloat16", "float16", "auto")."""
from __future__ import annotations

from tunesmith.api.common.v1 import common_pb2

#: Concrete dtype names, in the order of the proto enum.
NAMES: tuple[str, ...] = ("float32", "bfloat16", "float16")
_BY_ENUM = {common_pb2.DTYPE_FLOAT32: "float32", common_pb2.DTYPE_BFLOAT16: "bfloat16",
            common_pb2.DTYPE_FLOAT16: "float16"}


def dtype_name(value: int, unspecified: str) -> str:
    """The name of a Dtype enum value; DTYPE_UNSPECIFIED gives `unspecified` (the caller's
    documented default, e.g. "auto" for training, "float32" for merging and serving)."""
    if value == common_pb2.DTYPE_UNSPECIFIED:
        return unspecified
    return _BY_ENUM[value]


def dtype_enum(name: str) -> int:
    """The Dtype enum value of a name ("" and "auto" give DTYPE_UNSPECIFIED)."""
    for value, n in _BY_ENUM.items():
        if n == name:
            return value
    return common_pb2.DTYPE_UNSPECIFIED
