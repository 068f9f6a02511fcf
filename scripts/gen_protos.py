"""Generate the Python gRPC stubs from protos/ into services/openautoglm/v1 (the `openautoglm.v1` package).

One command, reproducible: `python scripts/gen_protos.py` (or `make protos`). The output is
checked in; tests/test_contract.py regenerates into a temp dir and fails on any drift.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PROTO_DIR = PROTO_ROOT / "openautoglm" / "v1"
DEFAULT_OUT = ROOT / "services" / "openautoglm" / "v1"


def generate(out_dir: Path) -> list[Path]:
    """Run grpcio-tools' protoc over every .proto; returns the files written into out_dir."""
    import grpc_tools
    from grpc_tools import protoc

    stage = out_dir.parent / (out_dir.name + ".stage")
    stage.mkdir(parents=True, exist_ok=True)
    include = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_DIR.glob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={stage}",
        f"--pyi_out={stage}",
        f"--grpc_python_out={stage}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    generated = stage / "openautoglm" / "v1"
    for src in sorted(generated.iterdir()):
        dst = out_dir / src.name
        dst.write_bytes(src.read_bytes())
        written.append(dst)
    init = out_dir / "__init__.py"
    init.write_text('"""Generated protobuf and gRPC stubs for package openautoglm.v1 (do not edit)."""\n')
    written.append(init)
    for p in sorted(stage.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    stage.rmdir()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    files = generate(args.out)
    print(f"generated {len(files)} files into {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
