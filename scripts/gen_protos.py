"""Regenerate the Python gRPC code from protos/ into clients/python (or another folder).

Usage: python scripts/gen_protos.py [OUT_DIR]
Writes *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every .proto under protos/, laid out by proto
package (tunesmith/api/<service>/v1/), so the proto package is the Python import path.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
DEFAULT_OUT = ROOT / "clients" / "python"


def generate(out_dir: Path) -> list[Path]:
    """Run grpc_tools.protoc over every proto; return the files written."""
    import grpc_tools
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written = sorted(out_dir.joinpath("tunesmith", "api").rglob("*_pb2*.py*"))
    return written


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    files = generate(out)
    print(f"generated {len(files)} files under {out}")
