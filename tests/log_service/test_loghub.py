"""The file parser against the loghub 2k samples and their published counts.

The samples live in the shared data folder (`logs/`), outside the repository.
The expected counts were taken from the raw files: lines per value of the
level field, and lines that contain each keyword, ignoring case.
"""

from __future__ import annotations

import collections

import pytest

from log_service.logfiles import parse_file
from splitlog.logs.v1 import logs_service_pb2 as logs_pb2

LINES_PER_FILE = 2000
YEAR = 2024

SEVERITY_COUNTS = {
    "HDFS": {"INFO": 1920, "WARN": 80},
    "Hadoop": {"INFO": 1040, "WARN": 808, "ERROR": 150, "FATAL": 2},
    # Android levels: I is INFO (920), D 650 plus V 257 are DEBUG, W is WARN
    # (170) and E is ERROR (3).
    "Android": {"INFO": 920, "DEBUG": 907, "WARN": 170, "ERROR": 3},
    "Apache": {"INFO": 1405, "ERROR": 595},
    "OpenStack": {"INFO": 1969, "WARN": 31},
    "Spark": {"INFO": 2000},
    "Windows": {"INFO": 2000},
    # No level field: every line is INFO.
    "HPC": {"INFO": 2000},
    "Mac": {"INFO": 2000},
    "OpenSSH": {"INFO": 2000},
    "Proxifier": {"INFO": 2000},
    "Thunderbird": {"INFO": 2000},
}

# error, fail, exception, warn, and timeout or "timed out".
KEYWORD_COUNTS = {
    "Android": (0, 0, 4, 0, 0),
    "Apache": (595, 0, 0, 0, 0),
    "HDFS": (0, 0, 80, 80, 0),
    "HPC": (492, 8, 0, 207, 1),
    "Hadoop": (156, 345, 9, 808, 6),
    "Mac": (182, 191, 3, 9, 9),
    "OpenSSH": (47, 1119, 2, 0, 0),
    "OpenStack": (0, 0, 21, 31, 0),
    "Proxifier": (97, 26, 0, 0, 0),
    "Spark": (0, 0, 0, 0, 0),
    "Thunderbird": (2, 45, 0, 35, 0),
    "Windows": (2, 250, 0, 282, 0),
}
KEYWORDS = (("error",), ("fail",), ("exception",), ("warn",), ("timeout", "timed out"))


def sample_path(shared_data, system: str):
    path = shared_data / "logs" / f"{system}_2k.log"
    if not path.is_file():
        pytest.skip(f"loghub sample not found at {path}")
    return path


def parse_sample(shared_data, system: str) -> list[logs_pb2.LogEntry]:
    path = sample_path(shared_data, system)
    return list(parse_file(path, service=system.lower(), year=YEAR))


def severity_counts(entries) -> dict[str, int]:
    return dict(
        collections.Counter(
            logs_pb2.Severity.Name(entry.severity).removeprefix("SEVERITY_")
            for entry in entries
        )
    )


def keyword_counts(entries) -> tuple[int, ...]:
    messages = [entry.message.lower() for entry in entries]
    return tuple(
        sum(1 for message in messages if any(word in message for word in words))
        for words in KEYWORDS
    )


@pytest.mark.parametrize("system", sorted(SEVERITY_COUNTS))
def test_sample_line_count(shared_data, system):
    entries = parse_sample(shared_data, system)

    assert len(entries) == LINES_PER_FILE


@pytest.mark.parametrize("system", sorted(SEVERITY_COUNTS))
def test_sample_severity_counts(shared_data, system):
    entries = parse_sample(shared_data, system)

    assert severity_counts(entries) == SEVERITY_COUNTS[system]


@pytest.mark.parametrize("system", sorted(KEYWORD_COUNTS))
def test_sample_keyword_counts(shared_data, system):
    entries = parse_sample(shared_data, system)

    assert keyword_counts(entries) == KEYWORD_COUNTS[system]


@pytest.mark.parametrize("system", sorted(SEVERITY_COUNTS))
def test_sample_every_time_read(shared_data, system):
    entries = parse_sample(shared_data, system)

    inferred = [
        entry.message for entry in entries if "time_inferred" in entry.attributes
    ]
    assert inferred == []


def test_proxifier_identical_first_lines(shared_data):
    entries = parse_sample(shared_data, "Proxifier")

    assert entries[0].message == entries[1].message == entries[2].message
    assert entries[0].timestamp == entries[2].timestamp


def test_thunderbird_time_from_epoch(shared_data):
    entries = parse_sample(shared_data, "Thunderbird")

    first = entries[0]
    assert first.timestamp.seconds == 1131566461
    assert first.host == "dn228"


def test_hosts_of_syslog_and_node_layouts(shared_data):
    mac_hosts = {entry.host for entry in parse_sample(shared_data, "Mac")}
    ssh_hosts = {entry.host for entry in parse_sample(shared_data, "OpenSSH")}
    hpc_hosts = {entry.host for entry in parse_sample(shared_data, "HPC")}

    assert len(mac_hosts) == 38
    assert ssh_hosts == {"LabSZ"}
    assert len(hpc_hosts) == 298


# Long enough to keep the oldest sample (HPC, 2003) for decades to come.
SYSTEM_RETENTION_HOURS = 100 * 365 * 24


@pytest.fixture(scope="module")
def log_system(tmp_path_factory):
    """The log router with its nodes, in this process, on free ports."""
    from log_service import app
    from splitlog_cli import components
    from splitlog_runtime import config as config_module

    config = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path_factory.mktemp("loghub") / "data",
            "grace_seconds": 1.0,
            "workers": 8,
            "log_node_port": 0,
            "log_service_port": 0,
            "log_retention_hours": SYSTEM_RETENTION_HOURS,
        },
    )
    nodes: dict = {}
    try:
        config = components.start_log_nodes(config, nodes)
        router = app.build(config)
    except BaseException:
        for node in nodes.values():
            node.stop(0, "the log system failed to start")
        raise
    yield f"127.0.0.1:{router.port}"
    router.stop(1.0, "test finished")
    for node in nodes.values():
        node.stop(1.0, "test finished")


# Reads wait until the nodes have stored every acknowledged entry. The HPC
# sample spreads 2,000 lines over three years, one partition file per day,
# so on a busy machine that can outlast the CLI's 10 s deadline once.
READ_ATTEMPTS = 4


def splitlog_json(capsys, address: str, *args: str) -> dict:
    import json

    from splitlog_cli.main import main

    for _ in range(READ_ATTEMPTS):
        status = main([*args, "--gateway", address, "--format", "json"])
        captured = capsys.readouterr()
        if status == 0 or "DEADLINE_EXCEEDED" not in captured.err:
            break
    assert status == 0, captured.err
    return json.loads(captured.out)


@pytest.mark.system
def test_shipped_samples_match_counts(shared_data, log_system, capsys):
    for system in sorted(SEVERITY_COUNTS):
        path = sample_path(shared_data, system)
        summary = splitlog_json(
            capsys, log_system, "logs", "ship", str(path),
            "--service", system.lower(), "--year", str(YEAR),
        )  # fmt: skip
        assert int(summary.get("acceptedCount", 0)) == LINES_PER_FILE, system

    for system, expected in SEVERITY_COUNTS.items():
        stats = splitlog_json(
            capsys, log_system, "logs", "stats", "--service", system.lower()
        )
        counts = {
            row["severity"].removeprefix("SEVERITY_"): int(row["count"])
            for row in stats["severityCounts"]
        }
        assert int(stats["totalCount"]) == LINES_PER_FILE, system
        assert counts == expected, system
        listed = splitlog_json(
            capsys, log_system, "logs", "query", "--service", system.lower(),
            "--limit", "5000",
        )  # fmt: skip
        assert len(listed["entries"]) == LINES_PER_FILE, system

    for system, expected in KEYWORD_COUNTS.items():
        found = []
        for words in KEYWORDS:
            # Identical lines are separate entries, so entries are counted, not
            # distinct messages. An entry that contains several of the words
            # counts once, for the first of them.
            total = 0
            for position, word in enumerate(words):
                result = splitlog_json(
                    capsys, log_system, "logs", "query", "--service",
                    system.lower(), "--keyword", word, "--limit", "5000",
                )  # fmt: skip
                earlier = [w.lower() for w in words[:position]]
                total += sum(
                    1
                    for entry in result["entries"]
                    if not any(w in entry["message"].lower() for w in earlier)
                )
            found.append(total)
        assert tuple(found) == expected, system
