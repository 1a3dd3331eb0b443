"""Settings: flag over environment over default, clear errors, the README table."""

from __future__ import annotations

import argparse
import math
import stat
from pathlib import Path

import pytest

from splitlog_cli import settings
from splitlog_runtime import config as config_module
from splitlog_runtime.config import SETTINGS, markdown_table

README = Path(__file__).resolve().parent.parent / "README.md"
TABLE_START = "<!-- config-table:start -->"
TABLE_END = "<!-- config-table:end -->"


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    config_module.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_default_when_unset():
    config = config_module.load(_parse(), environ={})

    for setting in SETTINGS:
        assert getattr(config, setting.name) == setting.default, setting.name


def test_rate_limit_metavar_reads_as_calls():
    parser = argparse.ArgumentParser()
    config_module.add_arguments(parser)

    usage = parser.format_usage()

    assert "--gateway-rate-limit-per-second CALLS" in usage
    assert " SECOND]" not in usage


def test_env_beats_default():
    config = config_module.load(_parse(), environ={"SPLITLOG_GATEWAY_PORT": "6000"})

    assert config.gateway_port == 6000


def test_flag_beats_env():
    args = _parse("--gateway-port", "7000")

    config = config_module.load(args, environ={"SPLITLOG_GATEWAY_PORT": "6000"})

    assert config.gateway_port == 7000


def test_override_beats_flag():
    args = _parse("--workers", "4")

    config = config_module.load(args, environ={}, overrides={"workers": 2})

    assert config.workers == 2


def test_overrides_parsed_like_flags(tmp_path):
    config = config_module.load(
        environ={},
        overrides={
            "workers": "3",
            "auth_required": "off",
            "grace_seconds": 1,
            "log_fsync": False,
            "data_dir": tmp_path,
            "gateway_health_probe_seconds": 0.5,
            "http_trusted_proxies": " 10.0.0.1 , 10.0.1.0/24",
        },
    )

    assert config.workers == 3
    assert config.auth_required is False
    assert config.grace_seconds == 1.0
    assert isinstance(config.grace_seconds, float)
    assert config.log_fsync is False
    assert config.data_dir == tmp_path
    assert config.gateway_health_probe_seconds == 0.5
    assert config.http_trusted_proxies == "10.0.0.1,10.0.1.0/24"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("gateway_health_probe_seconds", 0.05, "at least 0.1"),
        ("gateway_health_probe_seconds", "-1", "is negative"),
        ("log_partition_hours", 5, "does not divide 24"),
        ("log_compact_after_hours", -1, "is negative"),
        ("workers", 2.5, "expected a whole number"),
        ("auth_required", "maybe", "expected true or false"),
        ("grace_seconds", float("nan"), "finite number"),
        ("http_trusted_proxies", "*", "every client"),
    ],
)
def test_bad_override_names_setting_and_value(name, value, fragment):
    with pytest.raises(ValueError) as caught:
        config_module.load(environ={}, overrides={name: value})

    message = str(caught.value)
    assert f"override {name}" in message
    assert repr(value) in message
    assert fragment in message


def test_unknown_override_rejected():
    with pytest.raises(ValueError) as caught:
        config_module.load(environ={}, overrides={"wokers": 2})

    assert "'wokers'" in str(caught.value)
    assert "workers" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("1", True), ("Yes", True), ("off", False), ("0", False)],
)
def test_bool_setting_parses(text, expected):
    config = config_module.load(environ={"SPLITLOG_REFLECTION": text})

    assert config.reflection is expected


def test_types_follow_defaults():
    config = config_module.load(
        _parse("--data-dir", "/tmp/x", "--grace-seconds", "2.5"), environ={}
    )

    assert config.data_dir == Path("/tmp/x")
    assert config.grace_seconds == 2.5


def test_bad_flag_names_flag_and_value():
    with pytest.raises(ValueError) as caught:
        config_module.load(_parse("--http-port", "eighty"), environ={})

    assert "--http-port" in str(caught.value)
    assert "'eighty'" in str(caught.value)


def test_bad_env_names_variable_and_value():
    with pytest.raises(ValueError) as caught:
        config_module.load(environ={"SPLITLOG_REFLECTION": "maybe"})

    assert "SPLITLOG_REFLECTION" in str(caught.value)
    assert "'maybe'" in str(caught.value)


def test_bad_env_ignored_when_flag_given():
    args = _parse("--workers", "3")

    config = config_module.load(args, environ={"SPLITLOG_WORKERS": "many"})

    assert config.workers == 3


def test_trusted_proxies_normalized():
    config = config_module.load(
        environ={"SPLITLOG_HTTP_TRUSTED_PROXIES": " 10.0.0.5, fd00::/64 ,,"}
    )

    assert config.http_trusted_proxies == "10.0.0.5,fd00::/64"
    assert config_module.trusted_proxies(config.http_trusted_proxies) == [
        "10.0.0.5",
        "fd00::/64",
    ]


PROXIES = "SPLITLOG_HTTP_TRUSTED_PROXIES"
ORIGINS = "SPLITLOG_HTTP_CORS_ORIGINS"


@pytest.mark.parametrize(
    ("variable", "text", "fragment"),
    [
        (PROXIES, "proxy.example", "'proxy.example' is not an IP address"),
        (PROXIES, "10.0.0.1/24", "has host bits set"),
        (PROXIES, "*", "'*' would let every client choose its own address"),
        (ORIGINS, "https://app.example.com/path", "not a web origin"),
        (ORIGINS, "app.example.com", "not a web origin"),
        (PROXIES, "0.0.0.0/0", "'0.0.0.0/0' covers every address"),
        (PROXIES, "::/0", "'::/0' covers every address"),
        (ORIGINS, "*,https://app.example.com", "give it alone"),
        (ORIGINS, "https://*.example.com", "not a web origin"),
        (ORIGINS, "https://app.example.com:99999", "not a web origin"),
        (ORIGINS, "https://user@app.example.com", "not a web origin"),
        (ORIGINS, "https://app.example.com?", "not a web origin"),
        (ORIGINS, "https://app.example.com/", "not a web origin"),
        (ORIGINS, "http://[::1", "not a web origin"),
        (ORIGINS, "http://[::g]:3000", "not a web origin"),
        (ORIGINS, "http://::1:3000", "not a web origin"),
        (ORIGINS, "http://[fe80::1%25eth0]", "not a web origin"),
    ],
)
def test_bad_address_list_rejected(variable, text, fragment):
    with pytest.raises(ValueError) as caught:
        config_module.load(environ={variable: text})

    assert variable in str(caught.value)
    assert fragment in str(caught.value)


def test_cors_origins_normalized():
    # As a browser sends them: lower case and without the scheme's own port.
    origins = " https://App.Example.com:443, http://localhost:3000 ,http://a.test:80"
    config = config_module.load(environ={ORIGINS: origins})

    assert config.http_cors_origins == (
        "https://app.example.com,http://localhost:3000,http://a.test"
    )


def test_cors_ipv6_origins_normalized():
    # A browser writes an IPv6 host in brackets, compressed and in lower case.
    origins = "http://[::1]:3000, https://[FD00:0:0::1]:443,http://[0:0:0:0:0:0:0:1]"
    config = config_module.load(environ={ORIGINS: origins})

    assert config.http_cors_origins == (
        "http://[::1]:3000,https://[fd00::1],http://[::1]"
    )


def test_service_address_defaults_to_host_and_port():
    config = config_module.load(
        environ={"SPLITLOG_HOST": "10.0.0.5", "SPLITLOG_USER_SERVICE_PORT": "7001"}
    )

    assert config.service_address("user_service") == "10.0.0.5:7001"


def test_service_address_explicit_wins():
    config = config_module.load(
        environ={"SPLITLOG_BALANCE_SERVICE_ADDR": "balance-service:50063"}
    )

    assert config.service_address("balance_service") == "balance-service:50063"


def test_database_url_defaults_to_sqlite_in_data_dir(tmp_path):
    config = config_module.load(environ={"SPLITLOG_DATA_DIR": str(tmp_path)})

    for service in ("user_service", "expense_service", "balance_service"):
        expected = f"sqlite:///{tmp_path.resolve() / f'{service}.db'}"
        assert config.database_url(service) == expected


def test_every_setting_has_flag_and_env():
    for setting in SETTINGS:
        assert setting.flag == "--" + setting.name.replace("_", "-")
        assert setting.env == "SPLITLOG_" + setting.name.upper()


def test_markdown_table_lists_every_setting():
    table = markdown_table().splitlines()

    assert len(table) == len(SETTINGS) + 2
    for setting, row in zip(SETTINGS, table[2:], strict=True):
        assert row.startswith(f"| `{setting.flag}` | `{setting.env}` |")


def test_readme_shows_current_table():
    if not README.exists():
        pytest.skip(f"{README} does not exist yet; the settings table check needs it")
    text = README.read_text()
    if TABLE_START not in text or TABLE_END not in text:
        pytest.fail(
            f"README.md lacks the markers {TABLE_START} and {TABLE_END} around "
            "the settings table; paste `splitlog config --format markdown` "
            "between them"
        )

    shown = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()

    assert shown == markdown_table(), (
        "README.md's settings table is stale; replace it with the output of "
        "`splitlog config --format markdown`"
    )


@pytest.mark.parametrize(
    "variable",
    ["SPLITLOG_AUTH_REFRESH_REUSE_GRACE_SECONDS", "SPLITLOG_AUTH_CACHE_SECONDS"],
)
@pytest.mark.parametrize(
    "text, fragment", [("-1", "0 or more"), ("nan", "finite number")]
)
def test_seconds_out_of_range_rejected(variable, text, fragment):
    with pytest.raises(settings.ConfigError) as caught:
        settings.load(argparse.Namespace(), {variable: text})
    assert variable in str(caught.value)
    assert fragment in str(caught.value)


PROBE = "SPLITLOG_GATEWAY_HEALTH_PROBE_SECONDS"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("-5", "is negative"),
        ("-0.5", "is negative"),
        ("0.001", "below the minimum"),
        ("0.05", "below the minimum"),
        ("3600.5", "above the maximum"),
        ("86400", "above the maximum"),
        ("1e308", "above the maximum"),
    ],
)
def test_health_probe_seconds_out_of_range_rejected(text, problem):
    with pytest.raises(ValueError) as caught:
        config_module.load(environ={PROBE: text})

    message = str(caught.value)
    assert PROBE in message
    assert repr(text) in message
    assert problem in message
    assert "give 0 to turn the checks off" in message
    assert "at least 0.1 and at most 3600" in message


def test_health_probe_seconds_maximum_accepted():
    config = config_module.load(environ={PROBE: "3600"})

    assert config.gateway_health_probe_seconds == 3600.0


@pytest.mark.parametrize(
    "variable",
    [PROBE, "SPLITLOG_GRACE_SECONDS", "SPLITLOG_GATEWAY_RATE_LIMIT_PER_SECOND"],
)
def test_negative_zero_reads_as_zero(variable):
    config = config_module.load(environ={variable: "-0"})
    name = variable.removeprefix("SPLITLOG_").lower()
    value = getattr(config, name)

    assert value == 0.0
    assert math.copysign(1.0, value) == 1.0
    assert str(value) == "0.0"


def test_health_probe_seconds_limits_at_cli():
    too_short = _parse("--gateway-health-probe-seconds", "0.001")

    with pytest.raises(settings.ConfigError) as caught:
        settings.load(too_short, {})
    shortest = settings.load(_parse("--gateway-health-probe-seconds", "0.1"), {})
    off = settings.load(_parse("--gateway-health-probe-seconds", "0"), {})

    assert "--gateway-health-probe-seconds" in str(caught.value)
    assert "at least 0.1" in str(caught.value)
    assert shortest.gateway_health_probe_seconds == 0.1
    assert off.gateway_health_probe_seconds == 0.0


def test_log_message_limit_over_request_limit_rejected():
    environ = {
        "SPLITLOG_LOG_MAX_MESSAGE_BYTES": str(32 * 1024 * 1024),
        "SPLITLOG_MAX_MESSAGE_BYTES": str(16 * 1024 * 1024),
    }

    with pytest.raises(settings.ConfigError) as caught:
        settings.load(argparse.Namespace(), environ)

    assert "SPLITLOG_LOG_MAX_MESSAGE_BYTES" in str(caught.value)
    assert f"give at most {16 * 1024 * 1024}" in str(caught.value)


def test_log_limit_default_under_small_messages():
    environ = {"SPLITLOG_MAX_MESSAGE_BYTES": str(64 * 1024)}

    config = settings.load(argparse.Namespace(), environ)

    assert config.log_max_message_bytes > config.max_message_bytes


def test_data_dir_created_owner_only(tmp_path):
    data_dir = tmp_path / "fresh" / "data"
    config = config_module.load(environ={}, overrides={"data_dir": data_dir})
    settings.check_data_dir(config, argparse.Namespace(), {})
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


@pytest.mark.parametrize("text", ["0", "-5", "3601", "inf"])
def test_startup_timeout_out_of_range_rejected(text):
    variable = "SPLITLOG_STARTUP_TIMEOUT_SECONDS"
    with pytest.raises(settings.ConfigError) as caught:
        settings.load(argparse.Namespace(), {variable: text})
    assert variable in str(caught.value)


def test_startup_timeout_read_from_environment():
    loaded = settings.load(
        argparse.Namespace(), {"SPLITLOG_STARTUP_TIMEOUT_SECONDS": "240"}
    )
    assert loaded.startup_timeout_seconds == 240.0
