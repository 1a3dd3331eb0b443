"""docker-compose.yml and the Dockerfile agree with splitlog_cli.topology.

There is no Docker engine in the test environment, so these checks read the
files: the same components, commands, ports and SPLITLOG_* variables as
`splitlog up --processes`, health checks through `splitlog health`, and
PostgreSQL for storage.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from splitlog_cli.processes import start_waves, stop_waves
from splitlog_cli.settings import unknown_variable_warnings
from splitlog_cli.topology import (
    COMPONENTS_BY_NAME,
    all_components,
    local_environment,
    log_nodes_setting,
)
from splitlog_runtime import config as config_module
from splitlog_runtime.config import SERVICES, SETTINGS_BY_NAME

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = config_module.load(environ={})
COMPONENTS = all_components(DEFAULTS)
LOG_NODES = [component for component in COMPONENTS if component.is_log_node]
DATABASE_SERVICES = [name for name in SERVICES if COMPONENTS_BY_NAME[name].has_database]
# Set in every container but not by `splitlog up --processes`, whose children
# share one data directory and so one generated auth secret.
AUTH_VARIABLES = {"SPLITLOG_AUTH_REQUIRED", "SPLITLOG_AUTH_SECRET"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """Split a Dockerfile into (keyword, arguments) pairs.

    Joins lines continued with a trailing backslash and skips comments.
    """
    instructions = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def _directories_owned_by(run_commands: list[str], user: str) -> set[str]:
    """Return the directories that these RUN commands create owned by user.

    Recognises `useradd --create-home --home-dir DIR` and
    `install --directory --owner USER DIR...` (or the short -d and -o).
    """
    owned = set()
    for run_command in run_commands:
        for command in re.split(r"&&|;", run_command):
            words = shlex.split(command)
            if not words:
                continue
            creates_home = "--create-home" in words or "-m" in words
            if words[0] == "useradd" and words[-1] == user and creates_home:
                for flag in ("--home-dir", "-d"):
                    if flag in words:
                        owned.add(words[words.index(flag) + 1])
            if words[0] == "install" and ("--directory" in words or "-d" in words):
                owner = None
                paths = []
                arguments = iter(words[1:])
                for word in arguments:
                    if word in ("--owner", "-o"):
                        owner = next(arguments)
                    elif word in ("--group", "-g", "--mode", "-m"):
                        next(arguments)
                    elif not word.startswith("-"):
                        paths.append(word)
                if owner == user:
                    owned.update(paths)
    return owned


def _default_port(setting_name: str) -> int:
    return SETTINGS_BY_NAME[setting_name].default


def _env(compose: dict, component) -> dict[str, str]:
    return {
        key: str(value)
        for key, value in compose["services"][component.hostname]["environment"].items()
    }


def test_one_container_per_component(compose):
    expected = {component.hostname for component in COMPONENTS} | {"postgres"}

    assert set(compose["services"]) == expected


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.name)
def test_container_runs_serve_component(compose, component):
    service = compose["services"][component.hostname]

    assert service["command"] == list(component.command)
    assert service["build"] == "."


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.name)
def test_container_env_matches_processes_mode(compose, component):
    compose_env = _env(compose, component)

    assert set(compose_env) == set(local_environment(component, DEFAULTS)) | (
        AUTH_VARIABLES
    )
    assert compose_env["SPLITLOG_HOST"] == "0.0.0.0"


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.name)
def test_container_requires_auth_with_the_shared_secret(compose, component):
    compose_env = _env(compose, component)
    secret = compose_env["SPLITLOG_AUTH_SECRET"]

    assert compose_env["SPLITLOG_AUTH_REQUIRED"] == "true"
    # `${VAR:?message}`: compose refuses to start while the variable is unset
    # or empty, instead of each container generating a secret of its own.
    assert re.fullmatch(r"\$\{SPLITLOG_AUTH_SECRET:\?[^}]+\}", secret), secret
    assert "docs/security.md" in secret


@pytest.mark.parametrize("container", ["postgres", *(c.hostname for c in COMPONENTS)])
def test_container_sets_only_known_variables(compose, container):
    environment = compose["services"][container]["environment"]
    names = {name for name in environment if name.startswith("SPLITLOG_")}

    assert unknown_variable_warnings(dict.fromkeys(names, "")) == []


def test_log_service_has_no_database(compose):
    assert DATABASE_SERVICES == ["user_service", "expense_service", "balance_service"]
    assert "SPLITLOG_LOG_SERVICE_DB_URL" not in _env(
        compose, COMPONENTS_BY_NAME["log_service"]
    )


def test_env_file_is_ignored():
    for ignore_file in (".gitignore", ".dockerignore"):
        lines = (ROOT / ignore_file).read_text().splitlines()
        assert ".env" in lines, ignore_file


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.name)
def test_container_ports_are_defaults(compose, component):
    compose_env = _env(compose, component)
    local_env = local_environment(component, DEFAULTS)

    for setting_name in component.port_settings:
        key = SETTINGS_BY_NAME[setting_name].env
        assert compose_env[key] == str(_default_port(setting_name))
        assert local_env[key] == compose_env[key]


def test_log_nodes_run_the_default_topology(compose):
    ids = [node.node_id for node in LOG_NODES]

    assert ids == ["shard-0-a", "shard-0-b", "shard-1-a", "shard-1-b"]
    for node in LOG_NODES:
        compose_env = _env(compose, node)
        assert compose_env["SPLITLOG_LOG_NODE_ID"] == node.node_id
        assert compose["services"][node.hostname]["expose"] == [str(node.node_port)]


@pytest.mark.parametrize(
    "component",
    [c for c in COMPONENTS if c.is_log_node or c.name == "log_service"],
    ids=lambda c: c.name,
)
def test_log_topology_names_containers(compose, component):
    by_id = {node.node_id: node for node in LOG_NODES}
    expected = log_nodes_setting(DEFAULTS, lambda node_id: by_id[node_id].hostname)

    assert _env(compose, component)["SPLITLOG_LOG_NODES"] == expected
    assert local_environment(component, DEFAULTS)["SPLITLOG_LOG_NODES"] == (
        log_nodes_setting(DEFAULTS)
    )


@pytest.mark.parametrize(
    "component",
    [c for c in COMPONENTS if c.is_log_node or c.name == "log_service"],
    ids=lambda c: c.name,
)
def test_log_components_keep_data_on_a_volume(compose, component):
    volumes = compose["services"][component.hostname]["volumes"]
    names = [volume.split(":")[0] for volume in volumes]

    assert [volume.split(":")[1] for volume in volumes] == ["/var/lib/splitlog/data"]
    assert set(names) <= set(compose["volumes"])


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.name)
def test_container_reaches_peers_by_host_name(compose, component):
    compose_env = _env(compose, component)

    for peer_name in component.peers:
        peer = COMPONENTS_BY_NAME[peer_name]
        port = peer.grpc_port(DEFAULTS)
        assert compose_env[f"SPLITLOG_{peer_name.upper()}_ADDR"] == (
            f"{peer.hostname}:{port}"
        )


@pytest.mark.parametrize("name", SERVICES)
def test_service_exposes_its_port(compose, name):
    component = COMPONENTS_BY_NAME[name]
    service = compose["services"][component.hostname]

    assert service["expose"] == [str(_default_port(component.grpc_port_setting))]


# Compose's `${NAME}` and `${NAME:-default}`, where the default also replaces
# an empty value.
_VARIABLE = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
)


def _interpolate(text: str, environ: dict[str, str]) -> str:
    """Substitute variables in `text` as compose does with `environ`."""

    def value(match: re.Match) -> str:
        found = environ.get(match["name"], "")
        if found or match["default"] is None:
            return found
        return match["default"]

    return _VARIABLE.sub(value, text)


def _published_ports(compose: dict, environ: dict[str, str]) -> list[str]:
    return sorted(
        _interpolate(port, environ) for port in compose["services"]["gateway"]["ports"]
    )


def test_gateway_publishes_both_fronts_on_loopback(compose):
    grpc_port = _default_port("gateway_port")
    http_port = _default_port("http_port")

    assert _published_ports(compose, {}) == sorted(
        [
            f"127.0.0.1:{grpc_port}:{grpc_port}",
            f"127.0.0.1:{http_port}:{http_port}",
        ]
    )


def test_gateway_host_ports_follow_settings(compose):
    grpc_port = _default_port("gateway_port")
    http_port = _default_port("http_port")
    grpc_variable = SETTINGS_BY_NAME["gateway_port"].env
    http_variable = SETTINGS_BY_NAME["http_port"].env

    moved = _published_ports(compose, {grpc_variable: "6000", http_variable: "6080"})
    emptied = _published_ports(compose, {grpc_variable: "", http_variable: ""})

    assert moved == sorted(
        [f"127.0.0.1:6000:{grpc_port}", f"127.0.0.1:6080:{http_port}"]
    )
    assert emptied == _published_ports(compose, {})


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.name)
def test_healthcheck_runs_splitlog_health(compose, component):
    healthcheck = compose["services"][component.hostname]["healthcheck"]
    port = component.grpc_port(DEFAULTS)

    assert healthcheck["test"] == ["CMD", "splitlog", "health", f"127.0.0.1:{port}"]


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.name)
def test_depends_on_matches_topology(compose, component):
    depends_on = compose["services"][component.hostname].get("depends_on", {})
    by_name = {c.name: c for c in COMPONENTS}
    expected = {by_name[name].hostname for name in component.depends_on}
    if component.has_database:
        expected.add("postgres")

    assert set(depends_on) == expected
    for condition in depends_on.values():
        assert condition == {"condition": "service_healthy"}


def test_gateway_starts_after_every_service():
    waves = start_waves(COMPONENTS)

    assert [component.name for component in waves[-1]] == ["gateway"]
    assert {component.name for component in waves[0]} == (
        set(SERVICES) - {"log_service"}
    ) | {node.name for node in LOG_NODES}
    assert [component.name for component in waves[1]] == ["log_service"]
    assert set(COMPONENTS_BY_NAME["gateway"].depends_on) == set(SERVICES)


def test_log_shippers_stop_before_log_router():
    waves = [{component.name for component in wave} for wave in stop_waves(COMPONENTS)]

    assert waves == [
        {"gateway"},
        set(SERVICES) - {"log_service"},
        {"log_service"},
        {node.name for node in LOG_NODES},
    ]


@pytest.mark.parametrize("name", DATABASE_SERVICES)
def test_service_stores_in_its_own_postgres_database(compose, name):
    url = _env(compose, COMPONENTS_BY_NAME[name])[f"SPLITLOG_{name.upper()}_DB_URL"]

    assert url.startswith("postgresql+psycopg://")
    assert re.search(rf"@postgres:5432/{name}$", url), url


def test_postgres_init_creates_every_database(compose):
    postgres = compose["services"]["postgres"]
    mounts = [volume.split(":") for volume in postgres["volumes"]]
    scripts = [ROOT / source for source, target, *_ in mounts if "initdb.d" in target]

    assert postgres["image"] == "postgres:16"
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert len(scripts) == 1
    assert scripts[0].is_file()
    text = scripts[0].read_text()
    created = re.findall(r"^CREATE DATABASE (\w+) OWNER splitlog;$", text, re.M)
    assert created == DATABASE_SERVICES


def test_dockerfile_entrypoint_is_console_script(dockerfile):
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())

    assert pyproject["project"]["scripts"]["splitlog"] == "splitlog_cli.main:main"
    assert 'ENTRYPOINT ["splitlog"]' in dockerfile.splitlines()


def test_dockerfile_runs_as_non_root(dockerfile):
    lines = dockerfile.splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]

    assert "FROM python:3.11-slim" in lines
    assert users
    assert users[-1] not in ("root", "0")


def test_dockerfile_binds_every_interface(dockerfile):
    assert "SPLITLOG_HOST=0.0.0.0" in dockerfile


def test_dockerfile_creates_every_volume_mount_for_its_user(compose, dockerfile):
    # Docker creates a mount point that the image lacks owned by root, so a
    # container running as the image's user could not write to its volume.
    instructions = _dockerfile_instructions(dockerfile)
    users = [
        index for index, (keyword, _) in enumerate(instructions) if keyword == "USER"
    ]
    user = instructions[users[-1]][1]
    run_commands = [
        arguments
        for keyword, arguments in instructions[: users[-1]]
        if keyword == "RUN"
    ]
    owned = _directories_owned_by(run_commands, user)
    mounts = {
        (name, volume.split(":")[1])
        for name, service in compose["services"].items()
        if service.get("image") == "splitlog:latest"
        for volume in service.get("volumes", [])
    }

    assert mounts
    for name, path in sorted(mounts):
        assert path in owned, f"{name} mounts {path}, not created for {user}"
