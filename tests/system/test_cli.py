"""The `splitlog` commands that return at once: config, health, bad input."""

from __future__ import annotations

import argparse
import logging
import os
import re

import pytest

from splitlog_cli import settings
from splitlog_cli.main import main
from splitlog_cli.processes import child_environment
from splitlog_cli.signals import SUPERVISOR_PID_ENV
from splitlog_cli.topology import COMPONENTS_BY_NAME
from splitlog_runtime import config as config_module
from splitlog_runtime.config import SETTINGS, markdown_table
from tests.ports import free_ports
from user_service import app as user_service_app


@pytest.fixture
def clean_env(monkeypatch):
    """Remove SPLITLOG_* variables of the calling shell."""
    for key in list(os.environ):
        if key.startswith("SPLITLOG_"):
            monkeypatch.delenv(key)
    return monkeypatch


@pytest.fixture(scope="module")
def user_service_host(tmp_path_factory):
    config = config_module.load(
        environ={},
        overrides={"auth_required": False, "data_dir": tmp_path_factory.mktemp("cli")},
    )
    host = user_service_app.build(config, "127.0.0.1:0")
    yield host
    host.stop(0)


def test_config_markdown_is_readme_table(clean_env, capsys):
    status = main(["config", "--format", "markdown"])

    assert status == 0
    assert capsys.readouterr().out.strip() == markdown_table()


def test_config_env_round_trips(clean_env, capsys):
    status = main(["config", "--format", "env", "--gateway-port", "1234"])
    lines = capsys.readouterr().out.splitlines()
    environ = dict(line.split("=", 1) for line in lines)

    reloaded = config_module.load(environ=environ)

    assert status == 0
    assert environ["SPLITLOG_GATEWAY_PORT"] == "1234"
    assert set(environ) == {setting.env for setting in SETTINGS}
    assert reloaded.gateway_port == 1234
    assert reloaded.reflection is True


def test_main_restores_root_logger(clean_env, capsys):
    root = logging.getLogger()
    alembic = logging.getLogger("alembic")
    handlers, level, alembic_level = root.handlers[:], root.level, alembic.level

    status = main(["config", "--format", "env", "--log-level", "DEBUG"])
    capsys.readouterr()
    logging.getLogger("splitlog.test").warning("logged after main returned")

    assert status == 0
    assert root.handlers == handlers
    assert root.level == level
    assert alembic.level == alembic_level
    assert "logged after main returned" not in capsys.readouterr().err


def test_config_table_hides_secrets(clean_env, capsys):
    secret = "do-not-print-" + "s" * 32
    clean_env.setenv("SPLITLOG_AUTH_SECRET", secret)
    clean_env.setenv(
        "SPLITLOG_USER_SERVICE_DB_URL", "postgresql://ana:hunter2@127.0.0.1:5432/u"
    )

    status = main(["config"])
    out = capsys.readouterr().out

    assert status == 0
    assert secret not in out
    assert "hunter2" not in out
    assert "postgresql://ana:***@127.0.0.1:5432/u" in out


def test_config_table_shows_source(clean_env, capsys):
    clean_env.setenv("SPLITLOG_WORKERS", "3")

    status = main(["config", "--http-port", "9090"])
    rows = {
        line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()
    }

    assert status == 0
    assert rows["http_port"][1:] == ["9090", "--http-port"]
    assert rows["workers"][1:] == ["3", "SPLITLOG_WORKERS"]
    assert rows["gateway_port"][1:] == ["50051", "default"]


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["config", "--workers", "lots"], {}, "--workers"),
        (["config"], {"SPLITLOG_GRACE_SECONDS": "-1"}, "SPLITLOG_GRACE_SECONDS"),
        (["serve", "gateway", "--http-port", "65536"], {}, "--http-port"),
        (["config", "--log-format", "xml"], {}, "--log-format"),
        (["config", "--user-service-addr", "nohostport"], {}, "--user-service-addr"),
        (["config"], {"SPLITLOG_LOG_RETENTION_HOURS": "0"}, "LOG_RETENTION_HOURS"),
        (["config", "--log-retention-hours", "10000000"], {}, "--log-retention"),
        (["config", "--log-partition-hours", "0"], {}, "--log-partition-hours"),
        (["config", "--log-max-batch-entries", "0"], {}, "--log-max-batch-entries"),
        (["config", "--log-failover-seconds", "-1"], {}, "--log-failover-seconds"),
        (["config", "--auth-access-token-seconds", "0"], {}, "--auth-access-token"),
        (["config", "--log-wal-segment-bytes", "0"], {}, "--log-wal-segment-bytes"),
        (["config", "--log-wal-keep-bytes", "-1"], {}, "--log-wal-keep-bytes"),
        (
            ["config"],
            {"SPLITLOG_LOG_SNAPSHOT_BYTES_PER_SECOND": "-5"},
            "SNAPSHOT_BYTES",
        ),
        (["config"], {"SPLITLOG_LOG_SHARDS": "0"}, "SPLITLOG_LOG_SHARDS"),
        (["config"], {"SPLITLOG_LOG_SHARDS": "-3"}, "SPLITLOG_LOG_SHARDS"),
        (["config", "--log-replicas", "0"], {}, "--log-replicas"),
        (["config", "--log-replicas", "27"], {}, "--log-replicas"),
        (["config", "--log-sharding", "hash"], {}, "--log-sharding"),
        (["config", "--log-write-quorum", "most"], {}, "--log-write-quorum"),
        (["config", "--log-nodes", "shard-0"], {}, "--log-nodes"),
        (["config", "--log-max-open-streams", "0"], {}, "--log-max-open-streams"),
        (
            ["config", "--log-max-streams-per-caller", "-1"],
            {},
            "--log-max-streams-per-caller",
        ),
        (
            ["config", "--gateway-health-probe-seconds", "-1"],
            {},
            "--gateway-health-probe-seconds",
        ),
        (
            ["config"],
            {"SPLITLOG_RESTART_MAX_DELAY_SECONDS": "0.1"},
            "SPLITLOG_RESTART_MAX_DELAY_SECONDS",
        ),
    ],
)
def test_bad_setting_exits_2(clean_env, capsys, argv, env, named):
    for key, value in env.items():
        clean_env.setenv(key, value)

    status = main(argv)
    err = capsys.readouterr().err

    assert status == 2
    assert named in err
    assert err.startswith("splitlog: error: invalid value")


def test_choice_setting_any_case(clean_env, capsys):
    clean_env.setenv("SPLITLOG_LOG_WRITE_QUORUM", " Leader ")

    status = main(["config", "--format", "env"])
    out = capsys.readouterr().out

    assert status == 0
    assert "SPLITLOG_LOG_WRITE_QUORUM=leader" in out.splitlines()


@pytest.mark.parametrize(
    ("variable", "suggestion"),
    [
        ("SPLITLOG_GATEWAY_PROT", "did you mean SPLITLOG_GATEWAY_PORT?"),
        ("SPLITLOG_DATADIR", "did you mean SPLITLOG_DATA_DIR?"),
        ("SPLITLOG_TOKN", "did you mean SPLITLOG_TOKEN?"),
        ("SPLITLOG_FROBNICATE", "`splitlog config --format markdown` lists"),
    ],
)
def test_unknown_env_variable_warns(clean_env, capsys, variable, suggestion):
    clean_env.setenv(variable, "1")

    status = main(["config"])
    err = capsys.readouterr().err

    assert status == 0
    assert err.startswith(
        f"splitlog: warning: unknown environment variable {variable} is ignored; "
    )
    assert suggestion in err
    assert err.count("\n") == 1


def test_known_env_variables_no_warning(clean_env, capsys):
    for name in settings.OTHER_ENVIRONMENT_VARIABLES:
        clean_env.setenv(name, "1")
    clean_env.setenv("SPLITLOG_WORKERS", "3")

    status = main(["config"])
    err = capsys.readouterr().err

    assert status == 0
    assert err == ""


@pytest.mark.parametrize("command", [["up"], ["serve", "user_service"]])
def test_data_dir_file_exits_2(clean_env, capsys, tmp_path, command):
    taken = tmp_path / "a-file"
    taken.write_text("")

    status = main([*command, "--data-dir", str(taken)])
    err = capsys.readouterr().err

    assert status == 2
    assert err.startswith("splitlog: error: invalid value")
    assert "--data-dir: it is a file, not a directory" in err
    assert "Traceback" not in err


def test_unknown_component_is_usage_error(clean_env, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["serve", "billing_service"])

    assert caught.value.code == 2
    assert "billing_service" in capsys.readouterr().err


def test_health_serving(clean_env, capsys, user_service_host):
    status = main(["health", f"127.0.0.1:{user_service_host.port}"])

    assert status == 0
    assert capsys.readouterr().out.strip() == "SERVING"


def test_health_named_service_serving(clean_env, capsys, user_service_host):
    address = f"127.0.0.1:{user_service_host.port}"

    status = main(["health", address, "splitlog.users.v1.UsersService"])

    assert status == 0
    assert capsys.readouterr().out.strip() == "SERVING"


def test_health_unknown_service_fails(clean_env, capsys, user_service_host):
    address = f"127.0.0.1:{user_service_host.port}"

    status = main(["health", address, "splitlog.nothing.v1.NothingService"])

    assert status == 1
    assert capsys.readouterr().err.splitlines()[0] == "NOT_FOUND"


def test_health_unreachable_fails(clean_env, capsys):
    (port,) = free_ports(1)

    status = main(["health", f"127.0.0.1:{port}", "--timeout", "1"])

    assert status == 1
    error = capsys.readouterr().err.splitlines()
    assert error[0] in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
    assert f"127.0.0.1:{port}" in error[1]


def test_child_environment_wires_loopback(clean_env, tmp_path):
    config = config_module.load(
        environ={"SPLITLOG_HOST": "0.0.0.0", "SPLITLOG_DATA_DIR": str(tmp_path)}
    )

    gateway_env = child_environment(COMPONENTS_BY_NAME["gateway"], config)
    service_env = child_environment(COMPONENTS_BY_NAME["expense_service"], config)

    assert gateway_env["SPLITLOG_USER_SERVICE_ADDR"] == "127.0.0.1:50061"
    assert gateway_env["SPLITLOG_LOG_SERVICE_ADDR"] == "127.0.0.1:50064"
    assert gateway_env["SPLITLOG_HOST"] == "0.0.0.0"
    assert service_env["SPLITLOG_EXPENSE_SERVICE_DB_URL"] == (
        f"sqlite:///{tmp_path.resolve() / 'expense_service.db'}"
    )
    assert service_env["SPLITLOG_DATA_DIR"] == str(tmp_path.resolve())
    assert service_env[SUPERVISOR_PID_ENV].isdigit()


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as caught:
        main([*argv, "--help"])
    assert caught.value.code == 0
    return capsys.readouterr().out


def test_health_help_lists_only_its_options(capsys):
    text = _help(capsys, "health")

    assert "--timeout" in text
    assert "address" in text
    for setting in SETTINGS:
        assert setting.flag not in text, setting.flag


def test_help_shows_empty_default_as_empty(capsys):
    text = " ".join(_help(capsys, "config").split())

    assert re.search(r"default \.( |$)", text) is None
    assert "SPLITLOG_USER_SERVICE_ADDR; default (empty)." in text


def test_up_help_describes_restart_policy(capsys):
    text = " ".join(_help(capsys, "up").split())

    assert "restarted after 0.5s" in text
    assert "up to 300s (--restart-max-delay-seconds)" in text
    assert "more than 5 times in a row is crash-looping" in text
    assert "the other components keep running" in text
    assert "fails before the system is first ready stops every component" in text


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("SPLITLOG_WORKERS", "lots", "expected a whole number"),
        ("SPLITLOG_HTTP_PORT", "80.5", "expected a whole number"),
        ("SPLITLOG_GRACE_SECONDS", "soon", "expected a number"),
        ("SPLITLOG_DEADLINE_SECONDS", "nan", "expected a finite number"),
    ],
)
def test_bad_env_number_message(clean_env, capsys, variable, value, expected):
    clean_env.setenv(variable, value)

    status = main(["config"])
    err = capsys.readouterr().err

    assert status == 2
    assert variable in err
    assert repr(value) in err
    assert expected in err
    assert "invalid literal" not in err


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (
            ["up", "--user-service-port", "50200", "--log-service-port", "50200"],
            {},
            ("--user-service-port", "--log-service-port"),
        ),
        (
            ["up", "--processes", "--gateway-port", "50200"],
            {"SPLITLOG_HTTP_PORT": "50200"},
            ("--gateway-port", "SPLITLOG_HTTP_PORT"),
        ),
        (
            ["up", "--gateway-port", "50061"],
            {},
            ("the default of --user-service-port", "--gateway-port"),
        ),
        (
            ["serve", "gateway", "--http-port", "50051"],
            {},
            ("the default of --gateway-port", "--http-port"),
        ),
    ],
)
def test_same_port_twice_exits_2(clean_env, capsys, tmp_path, argv, env, named):
    for key, value in env.items():
        clean_env.setenv(key, value)

    status = main([*argv, "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err

    assert status == 2
    for name in named:
        assert name in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_same_port_zero_allowed(clean_env):
    config = config_module.load(environ={"SPLITLOG_HTTP_PORT": "0"}).replace(
        gateway_port=0
    )

    settings.check_distinct_ports(
        config, argparse.Namespace(), ["gateway_port", "http_port"], environ={}
    )
