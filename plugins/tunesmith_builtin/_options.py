"""Option checks shared by the built-in PEFT methods (peft_*.py).

Options arrive as JSON-like dicts: numbers from a protobuf Struct or from the trainer service's
typed configs may be floats (16.0), and a missing or None value means "the default". Every
helper raises InvalidArgument with `field` set to the option key alone; a method nests a sub-dict
(QLoRA's "lora") by prefixing the error (InvalidArgument.prefixed).
"""
from __future__ import annotations

from typing import Any, Iterable

from tunesmith.core.errors import InvalidArgument


def is_number(value: Any) -> bool:
    """int or float, not bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def options_dict(options: Any, method: str, allowed: Iterable[str]) -> dict[str, Any]:
    """A shallow copy of `options` (None is {}), refusing a non-dict and every key not in
    `allowed` (the first unknown key, alphabetically, names the field)."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise InvalidArgument(f"{method} options must be a mapping of option names to values, "
                              f"got {type(options).__name__}", field="options")
    allowed = tuple(allowed)
    unknown = sorted(set(options) - set(allowed), key=str)
    if unknown:
        known = ", ".join(allowed) if allowed else "none"
        raise InvalidArgument(f"{method} has no option {unknown[0]!r} (options: {known})", field=str(unknown[0]))
    return dict(options)


def given(options: dict[str, Any], key: str, default: Any) -> Any:
    """options[key], or `default` when it is missing or None."""
    value = options.get(key)
    return default if value is None else value


def integer(options: dict[str, Any], key: str, default: int, *, minimum: int = 1,
            maximum: int | None = None) -> int:
    """A whole number (16 or 16.0) in [minimum, maximum]; returned as int."""
    value = given(options, key, default)
    ok = is_number(value) and float(value).is_integer() and value >= minimum and (maximum is None or value <= maximum)
    if not ok:
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise InvalidArgument(f"{key} must be an integer {bounds}, got {value!r}", field=key)
    return int(value)


def flag(options: dict[str, Any], key: str, default: bool = False) -> bool:
    value = given(options, key, default)
    if not isinstance(value, bool):
        raise InvalidArgument(f"{key} must be true or false, got {value!r}", field=key)
    return value


def choice(options: dict[str, Any], key: str, default: str, allowed: Iterable[str]) -> str:
    """One of `allowed` (strings)."""
    allowed = tuple(allowed)
    value = given(options, key, default)
    if value not in allowed or not isinstance(value, str):
        raise InvalidArgument(f"{key} must be one of {', '.join(allowed)}, got {value!r}", field=key)
    return value


def text(options: dict[str, Any], key: str, default: str = "") -> str:
    value = given(options, key, default)
    if not isinstance(value, str):
        raise InvalidArgument(f"{key} must be a string, got {value!r}", field=key)
    return value


def module_names(options: dict[str, Any], key: str, *, allow_string: bool = False) -> list[str] | str:
    """A list of non-empty module names; [] when missing or empty. With allow_string, a single
    string (a regex, or peft's "all-linear") is kept as it is."""
    value = given(options, key, [])
    if allow_string and isinstance(value, str):
        return value or []
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value):
        return list(value)
    what = "a list of non-empty module names" + (" or a string" if allow_string else "")
    raise InvalidArgument(f"{key} must be {what}, got {value!r}", field=key)
