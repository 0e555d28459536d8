"""Which compute devices this machine has, found without importing torch (services stay small).

`check_device(name)` says whether a device name ("auto", "cpu", "cuda", "cuda:N") is usable
here, so a job asking for a GPU that is not there is refused before it is accepted.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess

_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:(\d{1,2}))$")


@functools.lru_cache(maxsize=1)
def cuda_device_count() -> int:
    """GPUs visible to this process: `nvidia-smi -L`, limited by CUDA_VISIBLE_DEVICES (0 if none)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return 0
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    count = sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
    if visible is not None:
        count = min(count, len([x for x in visible.split(",") if x.strip()]))
    return count if out.returncode == 0 else 0


def check_device(name: str) -> str | None:
    """None when `name` ("" = "auto") is usable here, else what is wrong with it."""
    m = _DEVICE.match(name or "auto")
    if m is None:
        return f"unknown device {name!r}: use auto, cpu, cuda or cuda:N"
    if name.startswith("cuda"):
        count = cuda_device_count()
        if count == 0:
            return f"device {name!r} is not available: this machine has no visible CUDA GPU (use cpu or auto)"
        index = int(m.group(2) or 0)
        if index >= count:
            return f"device {name!r} is not available: this machine has {count} visible CUDA GPU(s)"
    return None
