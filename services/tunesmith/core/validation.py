"""Checks every service runs on a request before accepting it (ranges, names, labels, keys).

Each check adds a violation (field path + description) to a `Violations` collector, so one
refusal lists every problem of the request; `Violations.raise_if_any()` raises them as one
InvalidArgument.
"""
from __future__ import annotations

import errno
import math
import os
import re
from pathlib import Path

from tunesmith.core.errors import InvalidArgument, Violations

MAX_LABELS = 64
MAX_IDEMPOTENCY_KEY = 128
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: A name something is served under by the inference service (LoadModel, LoadAdapter, serve_as).
SERVED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


def check_int(v: Violations, value: int, field: str, lo: int, hi: int, *, zero_means: str = "") -> None:
    """lo <= value <= hi (0 also allowed when `zero_means` names the default it stands for)."""
    if zero_means and value == 0:
        return
    v.check(lo <= value <= hi, field, f"must be in [{lo}, {hi}]{f' (0 = {zero_means})' if zero_means else ''}, got {value}")


def check_float(v: Violations, value: float, field: str, lo: float, hi: float, *, lo_open: bool = False,
                hi_open: bool = False, zero_means: str = "") -> None:
    """A finite number in the interval; 0 allowed when `zero_means` names its default."""
    if zero_means and value == 0:
        return
    ok = math.isfinite(value) and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    v.check(ok, field, f"must be a finite number in {interval}{f' (0 = {zero_means})' if zero_means else ''}, got {value!r}")


def check_enum(v: Violations, enum_type, value: int, field: str) -> None:
    """A known value of a proto enum (the wire accepts unknown numbers)."""
    v.check(value in enum_type.values(), field, f"unknown {enum_type.DESCRIPTOR.name} value {value}")


def check_labels(v: Violations, labels, field: str = "labels") -> None:
    """Job labels: at most MAX_LABELS; keys like "team" or "exp.v2" (lowercase, <= 63); values <= 256."""
    v.check(len(labels) <= MAX_LABELS, field, f"at most {MAX_LABELS} labels, got {len(labels)}")
    for key, value in labels.items():
        v.check(bool(_LABEL_KEY.match(key)), f"{field}[{key!r}]",
                "label keys are 1-63 characters of lowercase a-z, 0-9, '_', '.', '-', starting with a letter")
        v.check(len(value) <= 256 and "\x00" not in value, f"{field}[{key!r}]", "label values are at most 256 characters, without NUL")


def check_idempotency_key(v: Violations, key: str, field: str = "idempotency_key") -> None:
    if key:
        v.check(len(key) <= MAX_IDEMPOTENCY_KEY and bool(_PRINTABLE.match(key)), field,
                f"must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters without spaces")


def check_strings(v: Violations, values, field: str, *, max_items: int, max_length: int = 256,
                  allow_empty: bool = False) -> None:
    """A repeated string field: at most `max_items`, each non-empty (unless allowed) and short."""
    v.check(len(values) <= max_items, field, f"at most {max_items} items, got {len(values)}")
    for i, s in enumerate(values):
        if not allow_empty:
            v.check(bool(s), f"{field}[{i}]", "must not be empty")
        v.check(len(s) <= max_length, f"{field}[{i}]", f"at most {max_length} characters")


def check_struct(v: Violations, struct, field: str) -> None:
    """A google.protobuf.Struct (or Value / ListValue) that converts to JSON: every number in it
    finite. NaN and +-inf travel on the wire but have no JSON form (json_format refuses them), so
    each one is a violation naming its path, e.g. ``spec.template_options.labels[2]``."""
    kind = struct.DESCRIPTOR.full_name
    if kind == "google.protobuf.Struct":
        for key in sorted(struct.fields):
            where = f"{field}.{key}" if _IDENTIFIER.match(key) else f"{field}[{key!r}]"
            check_struct(v, struct.fields[key], where)
    elif kind == "google.protobuf.ListValue":
        for i, item in enumerate(struct.values):
            check_struct(v, item, f"{field}[{i}]")
    elif kind == "google.protobuf.Value":
        which = struct.WhichOneof("kind")
        if which == "number_value":
            v.check(math.isfinite(struct.number_value), field,
                    f"must be a finite number (JSON has no NaN or infinity), got {struct.number_value!r}")
        elif which == "struct_value":
            check_struct(v, struct.struct_value, field)
        elif which == "list_value":
            check_struct(v, struct.list_value, field)


def start_create_checks(request):
    """The checks every Create*Request shares: refuse fields not built yet, then check labels and
    the idempotency key. Returns (a copy of request.spec to fill defaults into, the Violations
    collector for the caller's own checks)."""
    from tunesmith.core.unimplemented import refuse_unimplemented

    refuse_unimplemented(request)
    spec = type(request.spec)()
    spec.CopyFrom(request.spec)
    v = Violations()
    check_labels(v, request.labels)
    check_idempotency_key(v, request.idempotency_key)
    return spec, v


def check_local_path(value: str, field: str) -> Path:
    """A caller's path on this machine ("~" expanded), usable for is_file()/is_dir() checks; it
    need not exist. InvalidArgument naming `field` when it cannot be one here: a "~user" whose home
    is unknown, a name longer than the OS allows, a path that cannot be looked at (permissions).
    (Callers check emptiness, NUL and overall length with the rest of their request.)"""
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # "~someone" with no such user or no home
        raise InvalidArgument(f"cannot expand {value.split('/', 1)[0][:64]!r}: no such user's home directory here",
                              field=field) from None
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        pass  # missing: the caller says so, in its own words
    except OSError as exc:
        why = "a name in it is too long" if exc.errno == errno.ENAMETOOLONG else (exc.strerror or type(exc).__name__)
        raise InvalidArgument(f"cannot use this path: {why}", field=field) from None
    except ValueError as exc:  # e.g. an embedded NUL
        raise InvalidArgument(f"cannot use this path: {exc}", field=field) from None
    return path
