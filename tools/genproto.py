"""Regenerate the Python code for every proto under protos/.

Run `python tools/genproto.py` after changing a .proto file, and commit the
result. `python tools/genproto.py --check` exits 1 when the committed code is
stale, which CI uses.

The output mirrors the proto packages (`protos/splitlog/users/v1/x.proto`
becomes `splitlog/users/v1/x_pb2.py`), so the generated imports resolve as
ordinary package imports without any sys.path changes.

It also writes `splitlog/descriptors.binpb`, a FileDescriptorSet of our own
protos with their comments (source info), which the generated modules leave
out. Server reflection serves those copies, so `grpcurl describe` shows the
comments. The file ships as package data.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUTPUT_PACKAGE = "splitlog"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
# Keep in step with splitlog_runtime.reflection.DESCRIPTOR_SET.
DESCRIPTOR_SET = Path(OUTPUT_PACKAGE) / "descriptors.binpb"


def _include_paths() -> list[Path]:
    """Return the proto roots: ours, protobuf's well-known types, googleapis."""
    import google.api  # from googleapis-common-protos

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    googleapis = Path(google.api.__path__[0]).parent.parent
    return [PROTO_ROOT, well_known, googleapis]


def generate(out_dir: Path) -> None:
    """Write the generated modules for every proto into out_dir."""
    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    args = ["grpc_tools.protoc"]
    args += [f"-I{path}" for path in _include_paths()]
    args += [f"--python_out={out_dir}", f"--pyi_out={out_dir}"]
    args += [f"--grpc_python_out={out_dir}"]
    # Type stubs for the stubs and servicers come from mypy-protobuf's plugin.
    grpc_stub_plugin = Path(sys.executable).parent / "protoc-gen-mypy_grpc"
    if not grpc_stub_plugin.exists():
        raise SystemExit(
            f"{grpc_stub_plugin} not found; install the dev extras: "
            "pip install -e '.[dev]'"
        )
    args += [f"--plugin=protoc-gen-mypy_grpc={grpc_stub_plugin}"]
    args += [f"--mypy_grpc_out={out_dir}"]
    # Only our own files, not their imports: reflection takes the imported
    # files (googleapis, well-known types) from the generated modules.
    (out_dir / DESCRIPTOR_SET).parent.mkdir(parents=True, exist_ok=True)
    args += [f"--descriptor_set_out={out_dir / DESCRIPTOR_SET}"]
    args += ["--include_source_info"]
    args += [str(path) for path in protos]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")
    for package_dir in {p.parent for p in out_dir.rglob("*_pb2.py")}:
        while package_dir != out_dir:
            (package_dir / "__init__.py").touch()
            package_dir = package_dir.parent


def _generated_files(tree: Path) -> set[Path]:
    found = set()
    for path in (tree / OUTPUT_PACKAGE).rglob("*"):
        if path.name.endswith(GENERATED_SUFFIXES) or path.name == "__init__.py":
            found.add(path.relative_to(tree))
    if (tree / DESCRIPTOR_SET).exists():
        found.add(DESCRIPTOR_SET)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if the committed generated code differs from a fresh run",
    )
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        wanted = _generated_files(fresh)
        present = _generated_files(ROOT)
        if options.check:
            stale = sorted(
                str(p)
                for p in wanted | present
                if p not in wanted
                or p not in present
                or not filecmp.cmp(fresh / p, ROOT / p, shallow=False)
            )
            if stale:
                print("generated code is stale; run `make protos`:", file=sys.stderr)
                for path in stale:
                    print(f"  {path}", file=sys.stderr)
                return 1
            print(f"generated code is up to date ({len(wanted)} files)")
            return 0
        for path in present - wanted:
            (ROOT / path).unlink()
        for path in wanted:
            (ROOT / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fresh / path, ROOT / path)
        print(f"wrote {len(wanted)} files under {OUTPUT_PACKAGE}/")
        return 0


if __name__ == "__main__":
    sys.exit(main())
