"""The one hyperparameter schema of training: defaults, limits and checks, used both by
CreateTrainingJob (on the proto, before a job is accepted) and by the SFT loop (on the dict the
worker receives). Nothing else defines a default.

Keys and defaults are DEFAULTS'. A check failure is InvalidArgument listing every bad key as
``<prefix>.<key>`` (``spec.hyperparameters.learning_rate`` from the service,
``hyperparameters.learning_rate`` from library callers).
"""
from __future__ import annotations

from typing import Any

from tunesmith.core.errors import Violations

DEFAULTS: dict[str, Any] = {
    "epochs": 1,
    "max_steps": 0,
    "batch_size": 8,
    "gradient_accumulation_steps": 1,
    "learning_rate": 2e-4,
    "lr_scheduler": "linear",
    "warmup_ratio": 0.0,
    "warmup_steps": None,  # None: from warmup_ratio
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "seed": 0,
    "max_seq_length": 512,
    "dtype": "auto",  # bfloat16 on a CUDA device that supports it, else float32
    "log_every_steps": 1,
    "eval_every_steps": 0,
    "early_stopping_patience": 0,
    "completion_only_loss": True,
    "device": "auto",
    "num_threads": 0,  # 0 = auto (calibrated, see tunesmith.trainer.loop)
    "gradient_checkpointing": False,
    "optimizer": "adamw",
    "packing": False,
    "checkpoint_every_steps": 0,  # 0 = about 20 per run, at least every 10 steps (tunesmith.trainer.loop)
    "attn_implementation": None,
}

SCHEDULERS = ("linear", "cosine", "constant")
DTYPES = ("auto", "float32", "bfloat16", "float16")
OPTIMIZERS = ("adamw", "adamw_8bit", "sgd")

#: key -> (lowest, highest) for integer keys.
INT_LIMITS: dict[str, tuple[int, int]] = {
    "epochs": (1, 100),
    "max_steps": (0, 10_000_000),
    "batch_size": (1, 1024),
    "gradient_accumulation_steps": (1, 1024),
    "seed": (0, 2**63 - 1),
    "max_seq_length": (2, 32768),
    "log_every_steps": (1, 2**62),  # a huge value only means "never log" (bench/ uses that)
    "eval_every_steps": (0, 2**62),
    "early_stopping_patience": (0, 1000),
    "num_threads": (0, 1024),
    "warmup_steps": (0, 10_000_000),
    "checkpoint_every_steps": (0, 2**62),
}
#: key -> (lowest, highest, lowest excluded) for float keys.
FLOAT_LIMITS: dict[str, tuple[float, float, bool]] = {
    "learning_rate": (0.0, 1.0, True),
    "warmup_ratio": (0.0, 0.999999, False),
    "weight_decay": (0.0, 10.0, False),
    "max_grad_norm": (0.0, 1e6, False),
}
CHOICES: dict[str, tuple[str, ...]] = {"lr_scheduler": SCHEDULERS, "dtype": DTYPES, "optimizer": OPTIMIZERS}


def resolve(hp: dict | None, *, prefix: str = "hyperparameters") -> dict[str, Any]:
    """DEFAULTS overlaid with `hp` (None, "" and missing mean "default"), every value checked.

    Integers may arrive as strings (protobuf's JSON form of int64) or integral floats. Unknown
    keys are kept (callers may pass extras) but not checked.
    """
    out = dict(DEFAULTS)
    for k, v in (hp or {}).items():
        if v is not None and v != "":
            out[k] = v
    v = Violations()

    def field(key: str) -> str:
        return f"{prefix}.{key}"

    for key, (lo, hi) in INT_LIMITS.items():
        value = out[key]
        if value is None:
            continue
        try:
            if isinstance(value, bool):
                raise ValueError
            f = float(value)
            if f != int(f):
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            v.add(field(key), f"must be an integer, got {value!r}")
            continue
        if not lo <= int(f) <= hi:
            v.add(field(key), f"must be in [{lo}, {hi}], got {int(f)}")
        out[key] = int(f)
    for key, (lo, hi, lo_open) in FLOAT_LIMITS.items():
        value = out[key]
        try:
            if isinstance(value, bool):
                raise ValueError
            f = float(value)
        except (TypeError, ValueError):
            v.add(field(key), f"must be a number, got {value!r}")
            continue
        if f != f or f < lo or (lo_open and f == lo) or f > hi:
            v.add(field(key), f"must be in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {value!r}")
        out[key] = f
    for key, choices in CHOICES.items():
        v.check(out[key] in choices, field(key), f"must be one of {', '.join(choices)}, got {out[key]!r}")
    for key in ("completion_only_loss", "gradient_checkpointing", "packing"):
        out[key] = bool(out[key])
    v.raise_if_any()
    return out


def from_proto(hp, *, device: str = "", prefix: str = "spec.hyperparameters") -> dict[str, Any]:
    """The resolved dict of a tunesmith.api.trainer.v1.Hyperparameters (proto zeros mean "the
    default"), checked with field paths under `prefix`. Enum fields become DEFAULTS' names."""
    from tunesmith.api.trainer.v1 import trainer_pb2
    from tunesmith.core.dtypes import dtype_name
    from tunesmith.core.validation import check_enum

    v = Violations()
    check_enum(v, trainer_pb2.LrScheduler, hp.lr_scheduler, f"{prefix}.lr_scheduler")
    check_enum(v, trainer_pb2.Optimizer, hp.optimizer, f"{prefix}.optimizer")
    from tunesmith.api.common.v1 import common_pb2

    check_enum(v, common_pb2.Dtype, hp.dtype, f"{prefix}.dtype")
    v.raise_if_any()
    numbers = {
        "epochs": hp.epochs, "max_steps": hp.max_steps, "batch_size": hp.batch_size,
        "gradient_accumulation_steps": hp.gradient_accumulation_steps, "learning_rate": hp.learning_rate,
        "warmup_ratio": hp.warmup_ratio, "weight_decay": hp.weight_decay, "max_grad_norm": hp.max_grad_norm,
        "seed": hp.seed, "max_seq_length": hp.max_seq_length, "eval_every_steps": hp.eval_every_steps,
        "early_stopping_patience": hp.early_stopping_patience, "log_every_steps": hp.log_every_steps,
        "checkpoint_every_steps": hp.checkpoint_every_steps,
    }
    # Zero means "the default"; a negative (or NaN) value is kept, and refused by resolve().
    given: dict[str, Any] = {k: value for k, value in numbers.items() if value}
    if hp.warmup_steps:
        given["warmup_steps"] = hp.warmup_steps
    if hp.lr_scheduler:
        given["lr_scheduler"] = trainer_pb2.LrScheduler.Name(hp.lr_scheduler).removeprefix("LR_SCHEDULER_").lower()
    if hp.optimizer:
        given["optimizer"] = trainer_pb2.Optimizer.Name(hp.optimizer).removeprefix("OPTIMIZER_").lower()
    given["dtype"] = dtype_name(hp.dtype, "auto")
    if hp.HasField("completion_only_loss"):
        given["completion_only_loss"] = hp.completion_only_loss
    given["gradient_checkpointing"] = hp.gradient_checkpointing
    given["packing"] = hp.packing
    if device:
        given["device"] = device
    return resolve(given, prefix=prefix)
