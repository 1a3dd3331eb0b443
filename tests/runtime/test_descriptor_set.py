"""The descriptor set with the protos' comments that reflection serves.

tools/genproto.py writes splitlog/descriptors.binpb next to the generated
modules. The file must ship in a wheel, and `genproto.py --check` must report
it when stale. Reflection must not attach its comments to a file that differs.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from google.protobuf import descriptor_pb2

from splitlog.users.v1 import users_service_pb2
from splitlog_runtime import reflection

REPO = Path(__file__).resolve().parents[2]
DESCRIPTOR_SET = Path(reflection.DESCRIPTOR_SET_PACKAGE) / reflection.DESCRIPTOR_SET
PACKAGES = [
    "splitlog",
    "splitlog_runtime",
    "splitlog_cli",
    "user_service",
    "expense_service",
    "balance_service",
    "log_service",
    "gateway",
]
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")


def _genproto_check(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(tree / "tools" / "genproto.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_genproto_check_covers_the_descriptor_set(tmp_path):
    for name in ["tools", "protos", "splitlog"]:
        shutil.copytree(REPO / name, tmp_path / name, ignore=_IGNORED)
    assert _genproto_check(tmp_path).returncode == 0

    descriptor_set = tmp_path / DESCRIPTOR_SET
    descriptor_set.write_bytes(descriptor_set.read_bytes() + b"\n\x00")
    changed = _genproto_check(tmp_path)
    descriptor_set.unlink()
    missing = _genproto_check(tmp_path)

    assert changed.returncode == 1
    assert str(DESCRIPTOR_SET) in changed.stderr
    assert missing.returncode == 1
    assert str(DESCRIPTOR_SET) in missing.stderr


def test_wheel_ships_the_descriptor_set(tmp_path):
    source = tmp_path / "source"
    for name in PACKAGES:
        shutil.copytree(REPO / name, source / name, ignore=_IGNORED)
    for name in ["pyproject.toml", "README.md"]:
        shutil.copy(REPO / name, source / name)

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=240,
    )

    (wheel,) = (tmp_path / "dist").glob("splitlog-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read(str(DESCRIPTOR_SET))
    assert shipped == (REPO / DESCRIPTOR_SET).read_bytes()


def _pool_with(file: descriptor_pb2.FileDescriptorProto):
    """A pool of the users proto's imports and `file`."""
    pool = reflection.reflection_pool(list(users_service_pb2.DESCRIPTOR.dependencies))
    pool.Add(file)
    return pool


def test_documented_files_add_comments():
    users = descriptor_pb2.FileDescriptorProto()
    users_service_pb2.DESCRIPTOR.CopyToProto(users)

    documented = reflection.documented_files(_pool_with(users))

    assert list(documented) == [users.name]
    served = descriptor_pb2.FileDescriptorProto.FromString(documented[users.name])
    assert served.source_code_info.location
    served.ClearField("source_code_info")
    assert served == users


def test_documented_files_skip_changed_file(caplog):
    users = descriptor_pb2.FileDescriptorProto()
    users_service_pb2.DESCRIPTOR.CopyToProto(users)
    users.message_type[0].field[0].name = "renamed_since"
    pool = _pool_with(users)

    with caplog.at_level(logging.WARNING, logger=reflection.__name__):
        documented = reflection.documented_files(pool)

    assert documented == {}
    (record,) = caplog.records
    assert users.name in record.getMessage()
    assert "tools/genproto.py" in record.getMessage()
