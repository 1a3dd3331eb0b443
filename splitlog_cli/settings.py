"""Resolve and check the settings of one `splitlog` command."""

from __future__ import annotations

import argparse
import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from log_service.topology import MAX_REPLICAS, parse_log_nodes
from splitlog_cli.client.credentials import TOKEN_ENV
from splitlog_cli.signals import SUPERVISOR_PID_ENV
from splitlog_runtime import config as config_module
from splitlog_runtime.config import SETTINGS, SETTINGS_BY_NAME, Config, Setting

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LOG_FORMATS = ("text", "json")
# Settings that count something, or give a width or lifetime, and so must be
# 1 or more.
_AT_LEAST_ONE = frozenset(
    {
        "log_max_batch_entries",
        "log_max_message_bytes",
        "log_partition_hours",
        "log_time_bucket_seconds",
        "log_wal_segment_bytes",
        "auth_access_token_seconds",
        "auth_refresh_token_seconds",
        "log_shards",
        "log_max_open_streams",
    }
)
_ENV_PREFIX = "SPLITLOG_"
# SPLITLOG_* environment variables that are not settings: the client
# credential, the supervisor's pid that `up --processes` gives its children,
# the database password of docker-compose.yml, and those of the tests.
OTHER_ENVIRONMENT_VARIABLES = frozenset(
    {
        TOKEN_ENV,
        SUPERVISOR_PID_ENV,
        "SPLITLOG_DB_PASSWORD",
        "SPLITLOG_TEST_POSTGRES_URL",
        "SPLITLOG_REQUIRE_POSTGRES",
        "SPLITLOG_SHARED_DATA",
    }
)
# Maximum log retention: 100 years. A timestamp that far back still fits the
# signed 64-bit nanoseconds that log entries are stored in.
MAX_LOG_RETENTION_HOURS = 100 * 8766


class ConfigError(ValueError):
    """A setting has an invalid value; the message names its flag or variable."""


def source(setting: Setting, args: argparse.Namespace, environ: Mapping) -> str:
    """Return where a setting's value came from: its flag, its variable or default."""
    if getattr(args, setting.name, None) is not None:
        return setting.flag
    if setting.env in environ:
        return setting.env
    return "default"


def load(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Config:
    """Resolve the settings and check their ranges.

    Raises:
      ConfigError: a value does not parse or is out of range.
    """
    environ = os.environ if environ is None else environ
    try:
        config = config_module.load(args, environ)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for setting in SETTINGS:
        problem = _problem(setting, getattr(config, setting.name))
        if problem:
            origin = _origin(setting, args, environ)
            value = getattr(config, setting.name)
            raise ConfigError(f"invalid value {value!r} for {origin}: {problem}")
    _check_log_message_limit(config, args, environ)
    return config


def _check_log_message_limit(
    config: Config, args: argparse.Namespace, environ: Mapping[str, str]
) -> None:
    """Refuse a log message limit, given explicitly, that no request could reach.

    The default stays allowed under a smaller max_message_bytes: there, no
    message is long enough to be cut.

    Raises:
      ConfigError: log_max_message_bytes is set over max_message_bytes.
    """
    limit, largest = config.log_max_message_bytes, config.max_message_bytes
    setting = SETTINGS_BY_NAME["log_max_message_bytes"]
    if limit > largest and source(setting, args, environ) != "default":
        origin = _origin(setting, args, environ)
        raise ConfigError(
            f"invalid value {limit!r} for {origin}: it is over max_message_bytes "
            f"({largest}), the largest request a component takes, so no message "
            f"that long could arrive; give at most {largest}"
        )


def unknown_variable_warnings(environ: Mapping[str, str] | None = None) -> list[str]:
    """Return a warning for each SPLITLOG_* variable that splitlog does not read.

    Such a variable is most likely a misspelt setting, which would otherwise
    leave the setting at its default without a word.
    """
    environ = os.environ if environ is None else environ
    known = {setting.env for setting in SETTINGS} | OTHER_ENVIRONMENT_VARIABLES
    # Names are compared without the prefix that they all share, which would
    # make any two of them look alike.
    known_suffixes = {name.removeprefix(_ENV_PREFIX): name for name in known}
    warnings = []
    for name in sorted(environ):
        if not name.startswith(_ENV_PREFIX) or name in known:
            continue
        warning = f"unknown environment variable {name} is ignored"
        close = difflib.get_close_matches(
            name.removeprefix(_ENV_PREFIX), known_suffixes, n=1, cutoff=0.75
        )
        if close:
            warning += f"; did you mean {known_suffixes[close[0]]}?"
        else:
            warning += "; `splitlog config --format markdown` lists the settings"
        warnings.append(warning)
    return warnings


def check_data_dir(
    config: Config, args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> None:
    """Create the data directory if needed and check that it can be written.

    Raises:
      ConfigError: the path is a file, or the directory cannot be created or
        written; the message names the setting and the reason.
    """
    environ = os.environ if environ is None else environ
    path = Path(config.data_dir)
    origin = _origin(SETTINGS_BY_NAME["data_dir"], args, environ)
    try:
        # Owner-only, as the services would restrict it at start anyway.
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(
            f"invalid value {str(path)!r} for {origin}: it is a file, not a "
            "directory; give a directory for the data files"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"invalid value {str(path)!r} for {origin}: cannot create the "
            f"directory ({exc.strerror}); give a directory that you can write"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(
            f"invalid value {str(path)!r} for {origin}: the directory is not "
            "writable; give a directory that you can write"
        )


def check_distinct_ports(
    config: Config,
    args: argparse.Namespace,
    port_settings: Iterable[str],
    environ: Mapping[str, str] | None = None,
) -> None:
    """Check that no two of the given port settings name the same port.

    Port 0 (any free port) may repeat.

    Raises:
      ConfigError: two settings name the same port; the message names both.
    """
    environ = os.environ if environ is None else environ
    owner: dict[int, Setting] = {}
    for name in port_settings:
        setting = SETTINGS_BY_NAME[name]
        port = getattr(config, name)
        if port == 0:
            continue
        if port in owner:
            first = _origin(owner[port], args, environ)
            second = _origin(setting, args, environ)
            raise ConfigError(
                f"{first} and {second} both set port {port}; every component "
                "needs a port of its own, so change one of them"
            )
        owner[port] = setting


def _origin(setting: Setting, args: argparse.Namespace, environ: Mapping) -> str:
    origin = source(setting, args, environ)
    if origin == "default":
        return f"the default of {setting.flag}"
    return origin


def _problem(setting: Setting, value: object) -> str | None:
    name = setting.name
    if name.endswith("_port") and not 0 <= value <= 65535:
        return "expected a port number from 0 to 65535"
    if name in ("grace_seconds", "deadline_seconds") and value < 0:
        return "expected a number of seconds, 0 or more"
    if name in ("workers", "max_message_bytes") and value < 1:
        return "expected a positive integer"
    if name in _AT_LEAST_ONE and value < 1:
        return "expected a whole number, 1 or more"
    if name == "log_retention_hours" and not 1 <= value <= MAX_LOG_RETENTION_HOURS:
        return f"expected a number of hours from 1 to {MAX_LOG_RETENTION_HOURS}"
    if name == "auth_refresh_reuse_grace_seconds" and value < 0:
        return "expected a number of seconds, 0 or more (0 turns the grace off)"
    if name == "auth_cache_seconds" and value < 0:
        return "expected a number of seconds, 0 or more (0 turns the cache off)"
    if name == "log_replicas" and not 1 <= value <= MAX_REPLICAS:
        return f"expected a whole number from 1 to {MAX_REPLICAS}"
    if name == "log_max_streams_per_caller" and value < 0:
        return "expected a whole number, 0 or more (0 turns the limit off)"
    if name == "log_nodes" and value.strip():
        try:
            parse_log_nodes(value)
        except ValueError as exc:
            return str(exc)
    if name == "log_failover_seconds" and not value > 0:
        return "expected a number of seconds above 0"
    if name == "log_max_future_seconds" and value < 0:
        return "expected a number of seconds, 0 or more"
    if name in ("log_wal_keep_bytes", "log_snapshot_bytes_per_second") and value < 0:
        return "expected a whole number, 0 or more (0 turns the limit off)"
    if name == "log_level" and value.upper() not in _LOG_LEVELS:
        return "expected one of " + ", ".join(_LOG_LEVELS)
    if name == "log_format" and value not in _LOG_FORMATS:
        return "expected text or json"
    if name.endswith("_addr") and value and ":" not in value:
        return "expected host:port"
    return None


def env_text(value: object) -> str:
    """Format a setting's value the way its environment variable is parsed."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
