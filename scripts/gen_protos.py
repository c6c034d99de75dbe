"""Regenerate the Python code for imagegen.v1 from protos/.

Usage: python scripts/gen_protos.py [OUT_DIR]   (default: the repository root)

grpcio-tools carries protoc and the gRPC plugin, so no other binary is needed;
its version is pinned in pyproject.toml so the output is byte-for-byte
reproducible and CI can fail on stale generated code.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def generate(out_dir: Path) -> None:
    # protos/google/ holds googleapis files vendored for buf to resolve imports; their
    # Python code is googleapis-common-protos', not ours to generate.
    sources = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto") if p.relative_to(PROTO_ROOT).parts[0] != "google"
    )
    well_known = str(resources.files("grpc_tools") / "_proto")
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for package in {Path(s).parent for s in sources}:
        (out_dir / package / "__init__.py").touch()


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
