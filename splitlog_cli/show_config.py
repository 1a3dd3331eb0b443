"""`splitlog config`: print the resolved settings."""

from __future__ import annotations

import argparse
import os

from splitlog_cli.settings import env_text, source
from splitlog_runtime.config import SETTINGS, Config, markdown_table

FORMATS = ("table", "markdown", "env")


def render(config: Config, args: argparse.Namespace, fmt: str) -> str:
    """Render the settings in one of FORMATS.

    `table` lists each resolved value and where it came from, with the auth
    secret and database passwords hidden, because the table is what people
    paste into reports. `env` prints `SPLITLOG_*=value` lines ready for an
    env file, secrets included, and `markdown` prints the reference table of
    every setting (flags, variables, defaults), as in the README.
    """
    if fmt == "markdown":
        return markdown_table()
    if fmt == "env":
        return "\n".join(
            f"{setting.env}={env_text(getattr(config, setting.name))}"
            for setting in SETTINGS
        )
    rows = [("SETTING", "VALUE", "SOURCE")]
    for setting in SETTINGS:
        value = _shown(setting.name, env_text(getattr(config, setting.name)))
        rows.append((setting.name, value, source(setting, args, os.environ)))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    return "\n".join(
        f"{name:<{widths[0]}}  {value:<{widths[1]}}  {origin}".rstrip()
        for name, value, origin in rows
    )


def _shown(name: str, value: str) -> str:
    """Return a setting's value for the table, with secrets hidden."""
    if not value:
        return value
    if name == "auth_secret":
        return "(set, hidden)"
    if name.endswith("_db_url"):
        # SQLAlchemy loads here, only for `splitlog config`.
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            return make_url(value).render_as_string(hide_password=True)
        except ArgumentError:
            return "(set, hidden: not a valid URL)"
    return value
