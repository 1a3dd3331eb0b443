"""Process-wide logging set-up: plain text for people, JSON lines for machines.

With the `log_self_ship` setting on, `start_self_ship` also sends the
process's log records into log_service.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

from splitlog_runtime.config import Config
from splitlog_runtime.logship import LogShipHandler

_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(process)d %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """Format each record as one JSON object with a fixed set of keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "severity": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever `sys.stderr` is at emit time.

    A handler bound to the stderr of the moment keeps writing to it after it
    was replaced and closed, as a test's capture is when the test ends.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        # StreamHandler sets the stream in __init__; the property ignores it.
        pass


def configure(level: str = "INFO", fmt: str = "text") -> logging.Handler:
    """Send the root logger to stderr in the chosen format.

    The new handler replaces every handler of the root logger.

    Returns:
      The handler that writes to stderr.

    Raises:
      ValueError: the level or the format is unknown.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO or WARNING")
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r}; use text or json")
    handler = StderrHandler()
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # Alembic reports every plugin and migration step at INFO on each start.
    logging.getLogger("alembic").setLevel(max(numeric, logging.WARNING))
    return handler


@contextlib.contextmanager
def configured(level: str = "INFO", fmt: str = "text") -> Iterator[None]:
    """Configure logging as `configure` does, and restore the previous set-up on exit.

    On exit the root logger gets back its handlers and level, and the
    `alembic` logger its level. A program or test that calls
    `splitlog_cli.main.main` in-process thus keeps its own logging set-up,
    and records logged after the call do not reach the command's stderr.

    Raises:
      ValueError: the level or the format is unknown. Logging is then
        left unchanged.
    """
    root = logging.getLogger()
    alembic = logging.getLogger("alembic")
    handlers, root_level, alembic_level = root.handlers[:], root.level, alembic.level
    handler = configure(level, fmt)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(root_level)
        alembic.setLevel(alembic_level)
        handler.close()


# Loggers of log_service itself. Shipping their records would write into the
# service that logged them, so each of its warnings could cause another one.
SELF_SHIP_EXCLUDED = ("log_service",)
_WILDCARD_HOSTS = ("0.0.0.0", "::", "[::]", "")


# How long a stopping process waits for its last log records to ship. Under
# `up --processes` the log router stops before the services, so waiting
# longer would only delay their exit.
SHIP_FLUSH_SECONDS = 0.5

# The service of records that no component logged: those of the `splitlog`
# command itself, such as the supervisor of `up --processes`.
LAUNCHER_SERVICE = "splitlog"

# The log record attribute that names the component in a shared process.
COMPONENT_ATTRIBUTE = "component"
# The start of a log node's server name, such as `log_node n0`.
_LOG_NODE_PREFIX = "log_node "

_COMPONENT_PACKAGES = frozenset(
    {"user_service", "expense_service", "balance_service", "gateway"}
)


def self_ship_address(config: Config) -> str:
    """Return the host:port where a service process reaches the log router.

    It is `log_service_addr`, or else the host setting and `log_service_port`,
    with a wildcard host such as 0.0.0.0 replaced by 127.0.0.1.
    """
    explicit = config.log_service_addr
    if explicit:
        return explicit
    host = "127.0.0.1" if config.host in _WILDCARD_HOSTS else config.host
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{config.log_service_port}"


def component_of(record: logging.LogRecord) -> str | None:
    """Return the component a record of a shared process came from, if known.

    The first that applies: the record's `component` attribute (set with
    `extra={"component": name}` by the shared runtime), its logger's package,
    `gateway` for uvicorn's loggers, and the name of a gRPC handler thread,
    which is the server's name followed by `_` and a number.
    """
    explicit = getattr(record, COMPONENT_ATTRIBUTE, None)
    if explicit:
        return str(explicit)
    package = record.name.partition(".")[0]
    if package in _COMPONENT_PACKAGES or package == "log_service":
        return package
    if package == "uvicorn":
        return "gateway"
    prefix, _, number = (record.threadName or "").rpartition("_")
    if number.isdigit() and _is_component(prefix):
        return prefix
    return None


def service_of_logger(record: logging.LogRecord) -> str:
    """Return the service of a record in `splitlog up`'s shared process.

    It is the component that logged it (see `component_of`). Records of no
    component, such as the command's own and signal handling, count as
    LAUNCHER_SERVICE.
    """
    component = component_of(record)
    return component if component in _COMPONENT_PACKAGES else LAUNCHER_SERVICE


def is_log_store_record(record: logging.LogRecord) -> bool:
    """Return whether the log router or a log node logged the record."""
    component = component_of(record) or ""
    return component == "log_service" or component.startswith(_LOG_NODE_PREFIX)


def _is_component(name: str) -> bool:
    return (
        name in _COMPONENT_PACKAGES
        or name == "log_service"
        or name.startswith(_LOG_NODE_PREFIX)
    )


#: Entries per call of a service shipping its own records, at most.
SELF_SHIP_BATCH_ENTRIES = 500


def start_self_ship(
    config: Config, service: str, *, by_logger: bool = False, send: bool = True
) -> LogShipHandler | None:
    """Ship the root logger's records to log_service when `log_self_ship` is on.

    Call it after `configure`, which replaces the root handlers. Records of
    log_service's own loggers are not shipped (see `SELF_SHIP_EXCLUDED`).
    With `by_logger`, each entry's service is the component that logged it
    (see `service_of_logger`) rather than `service`, and records of the log
    router and the log nodes are not shipped. With `send` False, the
    records wait in the handler's queue until its `start_sending`.

    Returns:
      The handler, to pass to `stop_self_ship` on shutdown, or None when the
      setting is off.
    """
    if not config.log_self_ship:
        return None
    handler = LogShipHandler(
        self_ship_address(config),
        service,
        # A larger batch than log_service takes would be refused whole.
        batch_size=min(SELF_SHIP_BATCH_ENTRIES, config.log_max_batch_entries),
        excluded_loggers=SELF_SHIP_EXCLUDED,
        send=send,
    )
    if by_logger:
        handler.service_of = service_of_logger
        # Records of the router and the nodes in this process would write
        # into the log store that logged them, as SELF_SHIP_EXCLUDED explains.
        handler.addFilter(lambda record: not is_log_store_record(record))
    logging.getLogger().addHandler(handler)
    return handler


def stop_self_ship(handler: LogShipHandler | None, timeout: float = 5.0) -> None:
    """Detach the handler and send what it has queued, within `timeout` seconds."""
    if handler is None:
        return
    logging.getLogger().removeHandler(handler)
    handler.close(timeout)
