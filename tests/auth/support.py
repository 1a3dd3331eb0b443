"""Helpers shared by the authentication and authorization tests."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from splitlog_cli.main import main


def operator_admin_key(
    data_dir: Path, user: str, name: str = "admin"
) -> tuple[str, str]:
    """Create an admin key as an operator does, with `splitlog admin-key`.

    Returns the key's resource name and its secret.
    """
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        status = main(
            ["admin-key", user, "--name", name, "--output", "json"]
            + ["--data-dir", str(data_dir)]
        )
    assert status == 0, output.getvalue()
    created = json.loads(output.getvalue())
    return created["name"], created["secret"]
