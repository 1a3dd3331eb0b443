"""Configuration from command-line flags and environment variables.

Every setting is declared once in `SETTINGS`. A flag wins over the environment
variable, which wins over the default. `markdown_table()` renders the table
that the README shows, and a test checks that the two agree.
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

SERVICES = ("user_service", "expense_service", "balance_service", "log_service")


class SettingsError(ValueError):
    """The settings are invalid, or contradict what the data directory records.

    A component raises it at its start with a message that names the values
    and the fix, so the command that starts the component reports the
    message alone, without a traceback.
    """


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError("expected a whole number") from None


def _parse_non_negative_int(text: str) -> int:
    value = _parse_int(text)
    if value < 0:
        raise ValueError(f"{value} is negative; use 0 or more")
    return value


def _parse_non_negative_float(text: str) -> float:
    value = _parse_float(text)
    if value < 0:
        raise ValueError(f"{value:g} is negative; use 0 or more")
    return value


def _parse_partition_hours(text: str) -> int:
    value = _parse_int(text)
    if value <= 0 or 24 % value:
        raise ValueError(f"{value} does not divide 24; use 1, 2, 3, 4, 6, 8, 12 or 24")
    return value


def _parse_hours(text: str) -> int:
    value = _parse_int(text)
    if value < 0:
        raise ValueError(f"{value} is negative; use 0 or more hours")
    return value


def _parse_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError("expected a number, such as 2.5") from None
    if not math.isfinite(value):
        raise ValueError("expected a finite number, such as 2.5")
    # Adding 0.0 turns -0.0 into 0.0, so that `-0` reads and prints as 0.
    return value + 0.0


#: Shortest interval, in seconds, of the gateway's health checks of its
#: backends other than 0 (off). Each check also gets this long as its
#: deadline, and a shorter one would report a busy but healthy backend as
#: hung.
MIN_HEALTH_PROBE_SECONDS = 0.1
#: Maximum interval, in seconds, of those health checks. A longer one would
#: leave a hung backend reported SERVING for hours.
MAX_HEALTH_PROBE_SECONDS = 3600.0


def _parse_probe_seconds(text: str) -> float:
    value = _parse_float(text)
    if value == 0 or MIN_HEALTH_PROBE_SECONDS <= value <= MAX_HEALTH_PROBE_SECONDS:
        return value
    if value < 0:
        problem = "is negative"
    elif value < MIN_HEALTH_PROBE_SECONDS:
        problem = "seconds is below the minimum"
    else:
        problem = "seconds is above the maximum"
    raise ValueError(
        f"{value:g} {problem}; give 0 to turn the checks off, or at least "
        f"{MIN_HEALTH_PROBE_SECONDS:g} and at most {MAX_HEALTH_PROBE_SECONDS:g} "
        "seconds"
    )


#: Seconds before `splitlog up --processes` first restarts a component that
#: exited, and the smallest allowed restart_max_delay_seconds.
RESTART_INITIAL_DELAY_SECONDS = 0.5
#: Seconds a restarted component must run before its restart delay starts
#: again from RESTART_INITIAL_DELAY_SECONDS.
RESTART_STABLE_SECONDS = 60.0


def _parse_restart_max_delay(text: str) -> float:
    value = _parse_float(text)
    if value < RESTART_INITIAL_DELAY_SECONDS:
        raise ValueError(
            f"{value:g} seconds is below the first restart delay; give at least "
            f"{RESTART_INITIAL_DELAY_SECONDS:g} seconds"
        )
    return value


#: Maximum startup_timeout_seconds. A component that takes longer has hung.
MAX_STARTUP_TIMEOUT_SECONDS = 3600.0


def _parse_startup_timeout(text: str) -> float:
    value = _parse_float(text)
    if 0 < value <= MAX_STARTUP_TIMEOUT_SECONDS:
        return value
    raise ValueError(
        f"{value:g} seconds is out of range; give more than 0 and at most "
        f"{MAX_STARTUP_TIMEOUT_SECONDS:g} seconds"
    )


def _choice(*choices: str) -> Callable[[str], str]:
    """Return a parser that accepts one of `choices`, in any case."""

    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"expected {' or '.join(choices)}")
        return value

    return parse


def _parse_trusted_proxies(text: str) -> str:
    """Check a comma-separated list of IP addresses and networks.

    Returns the entries joined by commas without spaces; empty trusts none.
    """
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    for entry in entries:
        if entry == "*":
            raise ValueError(
                "'*' would let every client choose its own address in "
                "X-Forwarded-For; list the reverse proxies' addresses or networks"
            )
        try:
            if "/" in entry:
                prefix = ipaddress.ip_network(entry).prefixlen
            else:
                prefix = ipaddress.ip_address(entry).max_prefixlen
        except ValueError as exc:
            raise ValueError(
                f"{entry!r} is not an IP address or network ({exc}); give "
                "addresses such as 10.0.0.5 or networks such as 10.0.0.0/24, "
                "separated by commas"
            ) from None
        if prefix == 0:
            raise ValueError(
                f"{entry!r} covers every address, so like '*' it would let "
                "every client choose its own address in X-Forwarded-For; list "
                "the reverse proxies' addresses or networks"
            )
    return ",".join(entries)


def _parse_cors_origins(text: str) -> str:
    """Check a comma-separated list of web origins, or `*`.

    Returns the entries joined by commas without spaces; empty allows none.
    """
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    if "*" in entries and len(entries) > 1:
        raise ValueError("'*' allows every origin, so give it alone")
    return ",".join(entry if entry == "*" else _origin(entry) for entry in entries)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(entry: str) -> str:
    """Return a web origin as browsers send it: lower case, no default port.

    An IPv6 host stays in brackets and is written compressed, such as
    `http://[::1]:3000`.
    """
    text = entry.lower()
    try:
        parts = urlsplit(text)
        port = parts.port
        host = _origin_host(parts.hostname or "", parts.netloc)
    except ValueError:
        parts, port, host = None, None, ""
    valid = (
        parts is not None
        and parts.scheme in _DEFAULT_PORTS
        and host
        # Nothing may follow the host and port: no path, query or fragment,
        # not even an empty one.
        and text == f"{parts.scheme}://{parts.netloc}"
        and "@" not in parts.netloc
        and "*" not in parts.netloc
        and (port is None or port > 0)
    )
    if not valid:
        raise ValueError(
            f"{entry!r} is not a web origin; give scheme, host and optional "
            "port without a path or wildcard, such as https://app.example.com, "
            "http://localhost:3000 or http://[::1]:3000, separated by commas, "
            "or '*' alone"
        )
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def _origin_host(hostname: str, netloc: str) -> str:
    """Return the host of an origin as a browser writes it, or '' if invalid.

    Raises:
      ValueError: a bracketed host is not an IPv6 address.
    """
    if not netloc.startswith("["):
        return "" if ":" in hostname else hostname
    address = ipaddress.IPv6Address(hostname)
    # A zone id (`%25eth0`) never appears in an origin that a browser sends.
    if address.scope_id is not None:
        return ""
    return f"[{address.compressed}]"


def cors_origins(value: str) -> list[str]:
    """Split the http_cors_origins setting into its entries."""
    return [entry for entry in value.split(",") if entry]


def trusted_proxies(value: str) -> list[str]:
    """Split the http_trusted_proxies setting into its entries."""
    return [entry for entry in value.split(",") if entry]


@dataclass(frozen=True)
class Setting:
    """One configuration value: its flag, its environment variable and default."""

    name: str
    default: Any
    help: str
    parse: Callable[[str], Any] = str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "SPLITLOG_" + self.name.upper()


def _service_settings(
    service: str, port: int, has_database: bool = True
) -> list[Setting]:
    label = service.replace("_", " ")
    settings = [
        Setting(f"{service}_port", port, f"Port that {label} listens on.", _parse_int),
        Setting(
            f"{service}_addr",
            "",
            f"Address (host:port) where the gateway and the other services "
            f"reach {label}; empty means the host setting and {service}_port.",
        ),
    ]
    if has_database:
        database_help = (
            f"SQLAlchemy URL of {label}'s database; empty means a SQLite file "
            f"`{service}.db` in the data directory."
        )
        settings.append(Setting(f"{service}_db_url", "", database_help))
    return settings


SETTINGS: list[Setting] = [
    Setting("host", "127.0.0.1", "Interface that every server binds."),
    Setting(
        "data_dir",
        "./data",
        "Directory of the local files: the SQLite databases, the log stores "
        "with their DuckDB files and write-ahead logs, auth_secret and the lock "
        "files.",
        Path,
    ),
    Setting("gateway_port", 50051, "Port of the gateway's gRPC front.", _parse_int),
    Setting("http_port", 8080, "Port of the gateway's REST/JSON front.", _parse_int),
    *_service_settings("user_service", 50061),
    *_service_settings("expense_service", 50062),
    *_service_settings("balance_service", 50063),
    # The log service keeps its state in files under the data directory
    # (`log_service/`, and `log_nodes/` for the nodes), so it has no
    # database URL setting.
    *_service_settings("log_service", 50064, has_database=False),
    Setting("reflection", True, "Serve gRPC server reflection.", _parse_bool),
    Setting(
        "grace_seconds",
        10.0,
        "Seconds that in-flight RPCs get to finish after SIGTERM or SIGINT.",
        _parse_float,
    ),
    Setting(
        "restart_max_delay_seconds",
        300.0,
        "Longest wait, in seconds, before `up --processes` restarts a component "
        "that exited on its own. The wait starts at "
        f"{RESTART_INITIAL_DELAY_SECONDS:g} seconds and doubles with each exit "
        f"that follows a run shorter than {RESTART_STABLE_SECONDS:g} seconds, so "
        "a component that keeps crashing is retried at this interval. At least "
        f"{RESTART_INITIAL_DELAY_SECONDS:g}.",
        _parse_restart_max_delay,
    ),
    Setting(
        "startup_timeout_seconds",
        120.0,
        "Seconds that `up --processes` waits for each component to report "
        "SERVING, database migrations included. A component that takes longer "
        "makes it stop every component and exit with status 1. More than 0 and "
        f"at most {MAX_STARTUP_TIMEOUT_SECONDS:g}.",
        _parse_startup_timeout,
    ),
    Setting(
        "deadline_seconds",
        5.0,
        "Deadline in seconds for calls between services when the caller set none.",
        _parse_float,
    ),
    Setting(
        "max_message_bytes",
        16 * 1024 * 1024,
        "Largest gRPC message in bytes that servers and channels accept; "
        "messages between log components may be 64 KiB larger.",
        _parse_int,
    ),
    Setting(
        "max_page_size",
        1000,
        "Largest page of a List call (and of log queries); a larger page_size "
        "is lowered to it.",
        _parse_int,
    ),
    Setting(
        "max_display_name_length",
        100,
        "Longest display name of a user or a group, in characters; at most 100.",
        _parse_int,
    ),
    Setting(
        "max_notes_length",
        2000,
        "Longest notes of an expense, and note of a settlement, in characters.",
        _parse_int,
    ),
    Setting(
        "expense_max_description_length",
        200,
        "Longest description of an expense, in characters; at most 200.",
        _parse_int,
    ),
    Setting(
        "expense_max_participants",
        500,
        "Most participants in the split of one expense.",
        _parse_int,
    ),
    Setting(
        "expense_max_payers",
        50,
        "Most payers of one expense.",
        _parse_int,
    ),
    Setting(
        "expense_max_batch_creates",
        10_000,
        "Most creates in one BatchCreateExpenses call.",
        _parse_int,
    ),
    Setting(
        "expense_max_batch_pairs",
        50_000,
        "Most payer and participant pairs in one BatchCreateExpenses call: the "
        "sum over its creates of payers x participants, which balance_service "
        "allocates when it applies the batch.",
        _parse_int,
    ),
    Setting(
        "auth_min_password_length",
        12,
        "Shortest password that SignUp and SetPassword accept, in characters.",
        _parse_int,
    ),
    Setting(
        "workers",
        16,
        "Threads per synchronous gRPC server, and per in-process dispatch pool "
        "of the gateway in `splitlog up`.",
        _parse_int,
    ),
    Setting(
        "gateway_inprocess",
        True,
        "In `splitlog up`, let the gateway call the unary methods of the services "
        "in its own process directly instead of over loopback gRPC.",
        _parse_bool,
    ),
    Setting(
        "log_sharding",
        "service",
        "How log entries are spread over shards: `service` (a consistent-hash "
        "ring over the service name) or `time` (by time bucket).",
        _choice("service", "time"),
    ),
    Setting(
        "log_time_bucket_seconds",
        3600,
        "Width of a time bucket when log_sharding is `time`.",
        _parse_int,
    ),
    Setting("log_shards", 2, "Number of log shards.", _parse_int),
    Setting(
        "log_replicas",
        2,
        "Log nodes per shard: one leader and the rest followers.",
        _parse_int,
    ),
    Setting(
        "log_node_port",
        50070,
        "Port of the first log node; the others take the following ports.",
        _parse_int,
    ),
    Setting(
        "log_nodes",
        "",
        "The log nodes as `shard-0=n0@host:port,n1@host:port;shard-1=...`; "
        "empty means log_shards x log_replicas nodes on the host setting from "
        "log_node_port on.",
    ),
    Setting(
        "log_node_id",
        "",
        "Id of the node that `splitlog serve log_node` runs, as named in log_nodes.",
    ),
    Setting(
        "log_write_quorum",
        "all",
        "When a log shard acknowledges a batch: `all` (the leader and every "
        "in-sync follower stored it) or `leader` (the leader stored it).",
        _choice("all", "leader"),
    ),
    Setting(
        "log_fsync",
        True,
        "Flush each log write-ahead record to disk before acknowledging it.",
        _parse_bool,
    ),
    Setting(
        "log_failover_seconds",
        1.5,
        "Seconds that a log leader may go without responding to the "
        "coordinator's polls before a follower replaces it.",
        _parse_float,
    ),
    Setting(
        "log_max_batch_entries",
        10000,
        "Maximum number of log entries in one batch or stream message. The "
        "gateway also checks REST batches against its own value.",
        _parse_int,
    ),
    Setting(
        "log_max_open_streams",
        64,
        "Maximum number of TailLogEntries and StreamLogEntries calls that the "
        "log router keeps open at once; further ones get RESOURCE_EXHAUSTED. "
        "The router runs this many handler threads on top of workers, one per "
        "open call.",
        _parse_int,
    ),
    Setting(
        "log_max_streams_per_caller",
        16,
        "Maximum number of TailLogEntries and StreamLogEntries calls that one "
        "caller keeps open at the log router at once; further ones get "
        "RESOURCE_EXHAUSTED. A caller is a user or API key with "
        "auth_required, else a client host. 0 means no limit per caller.",
        _parse_int,
    ),
    Setting(
        "log_max_message_bytes",
        256 * 1024,
        "Maximum length of a log message in UTF-8 bytes. Longer messages are "
        "cut and flagged `truncated`.",
        _parse_int,
    ),
    Setting(
        "log_partition_hours",
        1,
        "Width in hours of a log node's recent time partitions (one DuckDB "
        "file each); must divide 24. 24 keeps every day in one file.",
        _parse_partition_hours,
    ),
    Setting(
        "log_compact_after_hours",
        24,
        "Hours after its end at which a UTC day's log partitions are merged "
        "into one file per day. Older entries go straight into it, or into a "
        "file per month while their day has no file.",
        _parse_hours,
    ),
    Setting(
        "log_wal_segment_bytes",
        64 * 1024 * 1024,
        "Size in bytes at which a log node starts a new write-ahead log "
        "segment. The log is purged a whole segment at a time.",
        _parse_int,
    ),
    Setting(
        "log_wal_keep_bytes",
        1024 * 1024 * 1024,
        "Maximum bytes of write-ahead log that a log leader keeps for "
        "followers that lag behind. A follower that needs older entries "
        "receives a snapshot. 0 keeps the log until every follower has it.",
        _parse_int,
    ),
    Setting(
        "log_snapshot_bytes_per_second",
        0,
        "Maximum bytes per second that a log leader sends in one snapshot to "
        "a lagging follower. 0 sends as fast as the network allows.",
        _parse_int,
    ),
    Setting(
        "log_retention_hours",
        168,
        "Default log retention in hours until the retention policy is changed.",
        _parse_int,
    ),
    Setting(
        "log_max_future_seconds",
        600,
        "Maximum seconds that a log entry's timestamp may be ahead of the "
        "server clock.",
        _parse_int,
    ),
    Setting(
        "log_default_time_zone",
        "UTC",
        "Zone for log timestamps written without an offset (IANA name).",
    ),
    Setting(
        "log_self_ship",
        True,
        "Ship each service's own process log into log_service.",
        _parse_bool,
    ),
    Setting(
        "auth_required",
        True,
        "Require a bearer access token or API key on every gateway call, and "
        "a signature made with auth_secret on every call that a service or log "
        "node receives. Turn it off only where nobody else can reach a port, "
        "for example `SPLITLOG_AUTH_REQUIRED=false make up` for a local "
        "experiment.",
        _parse_bool,
    ),
    Setting(
        "auth_secret",
        "",
        "Secret that signs access tokens and the calls between components; at "
        "least 32 characters, the same in every process. Empty means a random "
        "one, created once in the data directory as `auth_secret` (mode 0600).",
    ),
    Setting(
        "auth_access_token_seconds",
        900,
        "Lifetime in seconds of an access token.",
        _parse_int,
    ),
    Setting(
        "auth_refresh_token_seconds",
        30 * 24 * 3600,
        "Lifetime in seconds of a refresh token.",
        _parse_int,
    ),
    Setting(
        "auth_refresh_reuse_grace_seconds",
        10.0,
        "Seconds after a RefreshToken during which the replaced refresh token "
        "is rejected without harm, for clients that retry a refresh. Later, "
        "presenting it signs its session out, since the token may be stolen. "
        "0 turns the grace off.",
        _parse_float,
    ),
    Setting(
        "auth_open_health",
        True,
        "With auth_required, serve the health service without a credential.",
        _parse_bool,
    ),
    Setting(
        "auth_open_reflection",
        True,
        "With auth_required, serve server reflection without a credential.",
        _parse_bool,
    ),
    Setting(
        "auth_cache_seconds",
        5.0,
        "Seconds that the gateway reuses a successful credential check instead "
        "of asking user_service again, never past the credential's own expiry; "
        "it keeps up to 4096 credentials. SignOut, RevokeApiKey, SetPassword "
        "and DeactivateUser take effect at once on the gateway they pass "
        "through; other gateways may accept the revoked credential for up to "
        "this long. 0 checks every call. An open stream, such as a tail, has "
        "its credential checked again this often (every second at 0) and at "
        "the credential's expiry, and ends when the check fails.",
        _parse_float,
    ),
    Setting(
        "auth_signin_max_failures",
        5,
        "Failed sign-ins for one email from one client within "
        "auth_signin_window_seconds after which SignIn refuses that email from "
        "that client for auth_signin_lockout_seconds (RESOURCE_EXHAUSTED). 0 "
        "turns the lockout off.",
        _parse_int,
    ),
    Setting(
        "auth_signin_window_seconds",
        900.0,
        "Seconds over which failed sign-ins count towards auth_signin_max_failures.",
        _parse_float,
    ),
    Setting(
        "auth_signin_lockout_seconds",
        900.0,
        "Seconds that a sign-in lockout lasts; attempts during it do not extend it.",
        _parse_float,
    ),
    Setting(
        "auth_password_hash_concurrency",
        0,
        "Maximum number of password hashes (Argon2, 64 MiB of memory each) "
        "that user_service computes at once, for SignUp, SignIn and "
        "SetPassword. As many more calls may wait for a slot; further ones get "
        "RESOURCE_EXHAUSTED with a retry delay. Calls that present a token or "
        "API key never wait for one. 0 means the number of CPUs, but at most a "
        "quarter of workers.",
        _parse_non_negative_int,
    ),
    Setting(
        "auth_password_hash_max_wait_seconds",
        0.5,
        "Maximum time that a SignUp, SignIn or SetPassword waits for a slot "
        "under auth_password_hash_concurrency, and never past its deadline; "
        "after it the call gets RESOURCE_EXHAUSTED with a retry delay.",
        _parse_non_negative_float,
    ),
    Setting(
        "tls_cert_file",
        "",
        "PEM certificate chain (leaf first) that the gateway's gRPC and REST "
        "ports serve; with tls_key_file it turns on TLS. Empty means plaintext.",
    ),
    Setting(
        "tls_key_file",
        "",
        "PEM private key of tls_cert_file, without a passphrase.",
    ),
    Setting(
        "tls_client_ca_file",
        "",
        "PEM CA certificates for mutual TLS: the gateway then rejects a client "
        "without a certificate that chains to one of them. Empty means no "
        "client certificate is requested.",
    ),
    Setting(
        "tls_ca_file",
        "",
        "PEM CA certificates that splitlog's own clients of a TLS gateway trust "
        "(the `splitlog up --processes` health wait and the client commands); "
        "empty means the system's trusted roots.",
    ),
    Setting(
        "max_concurrent_rpcs",
        1000,
        "Maximum RPCs that one server runs or queues at once: each service's "
        "gRPC server, and the gateway's gRPC and REST fronts together. Further "
        "calls get RESOURCE_EXHAUSTED. 0 means no limit.",
        _parse_int,
    ),
    Setting(
        "gateway_rate_limit_per_second",
        0.0,
        "Calls per second that the gateway accepts from one principal (a user, "
        "an API key, or the client's IP address for anonymous calls), on "
        "average; further calls get RESOURCE_EXHAUSTED (HTTP 429). 0 turns the "
        "limit off.",
        _parse_float,
    ),
    Setting(
        "gateway_rate_limit_burst",
        50,
        "Calls that one principal may make at once after a quiet period, above "
        "gateway_rate_limit_per_second.",
        _parse_int,
    ),
    Setting(
        "gateway_health_probe_seconds",
        2.0,
        "Seconds between the gateway's health checks of each backend, and the "
        "deadline of each check. A backend that leaves two checks in a row "
        "without a reply, such as a hung process, makes its services "
        "NOT_SERVING at the gateway until it replies again, and while it also "
        "completes no forwarded call, the gateway answers calls to it at once "
        "with UNAVAILABLE (reason BACKEND_UNAVAILABLE). 0 turns the checks "
        "off, so a hung backend shows only once keepalive closes its "
        "connection, up to 40 seconds later; other values must be at least "
        f"{MIN_HEALTH_PROBE_SECONDS:g} and at most {MAX_HEALTH_PROBE_SECONDS:g}.",
        _parse_probe_seconds,
    ),
    Setting(
        "http_trusted_proxies",
        "",
        "Comma-separated IP addresses or networks (such as 10.0.0.0/24) of "
        "reverse proxies in front of the REST port. Only for connections from "
        "them does the gateway take the client's address from X-Forwarded-For, "
        "and the scheme from X-Forwarded-Proto, for the sign-in lockout, rate "
        "limits and logs. Empty trusts no proxy, so the address is always the "
        "connection's.",
        _parse_trusted_proxies,
    ),
    Setting(
        "http_cors_origins",
        "",
        "Comma-separated web origins (such as https://app.example.com) whose "
        "browser pages may call the REST port, answered with CORS headers; "
        "'*' allows every origin. Empty sends no CORS headers, so browsers "
        "refuse cross-origin calls.",
        _parse_cors_origins,
    ),
    Setting("log_level", "INFO", "Level of the process log: DEBUG, INFO, WARNING."),
    Setting("log_format", "text", "Format of the process log: text or json."),
]

SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}


class Config:
    """Resolved settings; read them as attributes, e.g. `config.data_dir`."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def replace(self, **changes: Any) -> Config:
        """Return a copy with some values changed."""
        return Config({**self._values, **changes})

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def service_address(self, service: str) -> str:
        """Return the host:port where another component reaches a service."""
        explicit = self._values[f"{service}_addr"]
        return explicit or f"{self.host}:{self._values[f'{service}_port']}"

    def database_url(self, service: str) -> str:
        """Return the database URL of a service, defaulting to a SQLite file."""
        explicit = self._values[f"{service}_db_url"]
        if explicit:
            return explicit
        return f"sqlite:///{Path(self.data_dir).resolve() / f'{service}.db'}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting; each defaults to None so the environment can win."""
    group = parser.add_argument_group("configuration (flag, or environment variable)")
    for setting in SETTINGS:
        group.add_argument(
            setting.flag,
            dest=setting.name,
            default=None,
            metavar=_metavar(setting),
            help=f"{setting.help} Env {setting.env}; default {_default_text(setting)}.",
        )


def _metavar(setting: Setting) -> str:
    name = setting.name
    for suffix, metavar in (
        ("_rate_limit_per_second", "CALLS"),
        ("_port", "PORT"),
        ("_addr", "HOST:PORT"),
        ("_db_url", "URL"),
        ("_dir", "DIR"),
        ("_seconds", "SECONDS"),
        ("_bytes", "BYTES"),
    ):
        if name.endswith(suffix):
            return metavar
    if setting.parse is _parse_bool:
        return "BOOL"
    if setting.parse is _parse_int:
        return "N"
    return name.rsplit("_", 1)[-1].upper()


def _default_text(setting: Setting) -> str:
    # argparse formats help with %, so a literal percent sign is doubled.
    text = str(setting.default) if setting.default != "" else "(empty)"
    return text.replace("%", "%%")


def load(
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Resolve every setting from overrides, then flags, then the environment,
    then defaults.

    Overrides may be strings or typed values, such as 2 or False. Either kind
    goes through the setting's parser as text, so the same range checks apply.

    Raises:
      ValueError: an override, flag or environment variable does not parse,
        or an override names no setting; the message names it and the value.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = getattr(args, setting.name, None) if args is not None else None
        source = setting.flag
        if raw is None and setting.env in environ:
            raw, source = environ[setting.env], setting.env
        if raw is None:
            values[setting.name] = setting.default
            continue
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            raise ValueError(f"invalid value {raw!r} for {source}: {exc}") from None
    for name, value in (overrides or {}).items():
        values[name] = _parse_override(name, value)
    return Config(values)


def _parse_override(name: str, value: Any) -> Any:
    """Parse one override of `load` with its setting's parser.

    A typed value is parsed as its text, so 2 for an integer, False for a
    flag and a Path for a path are accepted, while 2.5 for an integer is not.
    """
    setting = SETTINGS_BY_NAME.get(name)
    if setting is None:
        close = difflib.get_close_matches(name, SETTINGS_BY_NAME, n=1)
        hint = (
            f"; did you mean {close[0]!r}?"
            if close
            else "; `splitlog config --format markdown` lists the settings"
        )
        raise ValueError(f"override {name!r} names no setting{hint}")
    text = value if isinstance(value, str) else str(value)
    try:
        return setting.parse(text)
    except ValueError as exc:
        raise ValueError(
            f"invalid value {value!r} for override {name}: {exc}"
        ) from None


def markdown_table(settings: Iterable[Setting] = SETTINGS) -> str:
    """Render the settings as the Markdown table shown in the README."""
    lines = [
        "| Flag | Environment variable | Default | Meaning |",
        "|---|---|---|---|",
    ]
    for setting in settings:
        default = f"`{setting.default}`" if setting.default != "" else "(empty)"
        lines.append(
            f"| `{setting.flag}` | `{setting.env}` | {default} | {setting.help} |"
        )
    return "\n".join(lines)
