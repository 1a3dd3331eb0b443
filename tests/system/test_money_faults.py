"""Faults between expense_service and balance_service under a stream of writes.

One `splitlog up --processes` runs for the module, with one child process per
component. Each test writes to its own group through the gateway from several
threads, kills a service with SIGKILL in the middle when it is a fault test,
waits for the supervisor to start it again, and then checks that

- every acknowledged write is stored as acknowledged, and every create,
  retried with its `request_id` until acknowledged, is stored exactly once;
- GetGroupBalance equals the nets recomputed from the stored expenses and
  settlements, to the minor unit in every currency, and each currency adds up
  to zero;
- in the tests that kill user_service, the gateway or log_service, a log
  writer sends batches through the gateway as well, and every acknowledged
  entry is listed exactly once afterwards.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import time
import warnings

import pytest

from tests.system.conftest import start_splitlog, wait_for_health
from tests.system.log_writer import LogWriter, listed_messages
from tests.system.money_support import (
    CURRENCIES,
    Clients,
    ExpenseWriter,
    Fingerprint,
    WriterReport,
    component_pid,
    create_group,
    join_writers,
    kill_process_group,
    list_expenses,
    list_settlements,
    merged_reports,
    nonzero_nets,
    run_writers,
    supervised_pids,
    wait_for_balances,
    wait_for_writes,
)

pytestmark = pytest.mark.system

#: Seconds a killed child gets to be started again and report SERVING.
RESTART_TIMEOUT = 30.0
#: Seconds the balances get to catch up with the writes once they end.
CONVERGE_TIMEOUT = 30.0


class System:
    """The running `splitlog up --processes` and children started by a test."""

    def __init__(self, running) -> None:
        self.running = running
        self.extra_processes: list[subprocess.Popen] = []

    @property
    def supervisor_pid(self) -> int:
        return self.running.process.pid

    def address(self, component: str) -> str:
        flag = "--" + component.replace("_", "-") + "-port"
        return f"127.0.0.1:{self.running.ports[flag]}"

    def kill(self, component: str) -> tuple[int, list[bytes], dict[str, str]]:
        """SIGKILL a component's child and return its pid, command and environment."""
        pid = component_pid(self.supervisor_pid, component)
        assert pid is not None, f"no running {component} child"
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            command = [part for part in cmdline.read().split(b"\0") if part]
        with open(f"/proc/{pid}/environ", "rb") as environ:
            pairs = [entry.split(b"=", 1) for entry in environ.read().split(b"\0")]
        environment = {key.decode(): value.decode() for key, value in pairs[:-1]}
        os.kill(pid, signal.SIGKILL)
        return pid, command, environment

    def restart_after_kill(self, component: str, killed) -> None:
        """Wait until the supervisor started the component again and it is SERVING.

        If no new child appears within half the timeout, start one with the
        command and environment of the killed one, as an operator would, and
        warn: restarting is the supervisor's job, which other tests check.
        """
        old_pid, command, environment = killed
        deadline = time.monotonic() + RESTART_TIMEOUT
        started_by_test = False
        while True:
            new_pid = component_pid(self.supervisor_pid, component)
            if new_pid not in (None, old_pid):
                break
            if time.monotonic() > deadline - RESTART_TIMEOUT / 2:
                process = subprocess.Popen(
                    command,
                    env=environment,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
                self.extra_processes.append(process)
                started_by_test = True
                break
            time.sleep(0.1)
        wait_for_health(self.address(component), deadline - time.monotonic())
        if started_by_test:
            warnings.warn(
                f"the supervisor did not restart {component} within "
                f"{RESTART_TIMEOUT / 2:.0f}s after SIGKILL; the test started it",
                stacklevel=2,
            )

    def kill_everything(self) -> None:
        children = list(supervised_pids(self.supervisor_pid))
        kill_process_group(self.supervisor_pid)
        self.running.process.wait(timeout=10)
        for pid in children + list(supervised_pids(self.supervisor_pid)):
            kill_process_group(pid)
        for process in self.extra_processes:
            kill_process_group(process.pid)
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    running = start_splitlog(tmp_path_factory.mktemp("money"), "--processes")
    started = System(running)
    try:
        running.wait_until_ready()
        yield started
    finally:
        started.kill_everything()


@pytest.fixture
def clients(system):
    connected = Clients.connect(system.running.grpc_address)
    yield connected
    connected.close()


def _log_tail(system: System) -> str:
    """Return the last warnings and errors of every component, for a failure."""
    lines = [
        line
        for line in system.running.log().splitlines()
        if " WARNING " in line or " ERROR " in line or "Traceback" in line
    ]
    return "\n".join(lines[-40:])


def _assert_writes_survived(
    clients: Clients, group_id: str, report: WriterReport
) -> None:
    stored = {
        expense.name: expense
        for expense in list_expenses(clients, group_id, show_deleted=True)
    }
    assert set(stored) == set(report.acknowledged)
    for name, fingerprint in report.acknowledged.items():
        assert Fingerprint.of(stored[name]) == fingerprint, name

    # Updates append "-u" to the description, so the part before names the create.
    created = collections.Counter(
        expense.description.split("-u")[0] for expense in stored.values()
    )
    assert created == collections.Counter(list(report.creates))
    assert None not in report.creates.values()

    notes = collections.Counter(
        settlement.note
        for settlement in list_settlements(clients, group_id, show_deleted=True)
    )
    assert notes == collections.Counter(list(report.settlements))
    assert None not in report.settlements.values()


def _assert_balances_exact(clients: Clients, group_id: str, system: System) -> None:
    actual, expected = wait_for_balances(clients, group_id, CONVERGE_TIMEOUT)

    assert nonzero_nets(actual) == expected, _log_tail(system)
    assert set(expected) == set(CURRENCIES)
    for currency, nets in actual.items():
        assert sum(nets.values()) == 0, currency


def _writers(clients, group_id, members, count, **options) -> list[ExpenseWriter]:
    deadline = time.monotonic() + 90
    return [
        ExpenseWriter(clients, group_id, members, seed, deadline=deadline, **options)
        for seed in range(count)
    ]


def _write_through_kill(system: System, writers, component: str) -> None:
    """Run the writers, SIGKILL `component` midway and write on after restart."""
    for writer in writers:
        writer.start()
    try:
        wait_for_writes(writers, 40, timeout=30)
        killed = system.kill(component)
        system.restart_after_kill(component, killed)
        wait_for_writes(writers, 40, timeout=45)
    finally:
        for writer in writers:
            writer.stop()
        join_writers(writers, timeout=60)


def test_balance_service_killed_mid_stream(system, clients):
    group_id, members = create_group(clients, 4)
    writers = _writers(clients, group_id, members, 4, settlements=0.2, pause=0.02)

    _write_through_kill(system, writers, "balance_service")
    report = merged_reports(writers)

    assert report.errors == [], _log_tail(system)
    assert report.retried > 0, "no settlement was sent while balance_service was down"
    _assert_writes_survived(clients, group_id, report)
    _assert_balances_exact(clients, group_id, system)


def test_expense_service_killed_mid_stream(system, clients):
    group_id, members = create_group(clients, 4)
    writers = _writers(clients, group_id, members, 4, settlements=0.1, pause=0.02)

    _write_through_kill(system, writers, "expense_service")
    report = merged_reports(writers)

    assert report.errors == [], _log_tail(system)
    assert report.retried > 0, "no write was sent while expense_service was down"
    _assert_writes_survived(clients, group_id, report)
    _assert_balances_exact(clients, group_id, system)


def _wait_for_log(system: System, text: str, count: int, timeout: float) -> None:
    """Wait until the log contains `text` at least `count` times."""
    deadline = time.monotonic() + timeout
    while system.running.log().count(text) < count:
        assert time.monotonic() < deadline, (
            f"the log did not show {text!r} {count} times\n{_log_tail(system)}"
        )
        time.sleep(0.05)


@pytest.mark.timeout(240)
def test_expense_killed_before_first_event(system, clients):
    """The ledger stream of a fresh balance_service dies before its first message.

    A balance_service that restarts on an idle ledger opens a stream on which
    nothing has arrived yet. expense_service is killed at exactly that point,
    so the consumer must notice the dead stream and follow the new
    expense_service.
    """
    group_id, members = create_group(clients, 4)
    run_writers(_writers(clients, group_id, members, 2, operations=10), timeout=60)
    wait_for_balances(clients, group_id, CONVERGE_TIMEOUT)
    opened = "expense_service.ledger: ledger stream opened"
    streams = system.running.log().count(opened)

    system.restart_after_kill("balance_service", system.kill("balance_service"))
    _wait_for_log(system, opened, streams + 1, RESTART_TIMEOUT)
    system.restart_after_kill("expense_service", system.kill("expense_service"))
    _wait_for_log(system, opened, streams + 2, CONVERGE_TIMEOUT)
    writers = _writers(clients, group_id, members, 2, operations=10)
    run_writers(writers, timeout=60)

    assert merged_reports(writers).errors == [], _log_tail(system)
    _assert_balances_exact(clients, group_id, system)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("component", ["user_service", "gateway", "log_service"])
def test_component_killed_under_load(system, clients, component):
    group_id, members = create_group(clients, 4)
    writers = _writers(clients, group_id, members, 3, settlements=0.2, pause=0.02)
    log_writer = LogWriter(clients.channel, 10, deadline=time.monotonic() + 90)
    log_writer.start()
    try:
        _write_through_kill(system, writers, component)
    finally:
        log_writer.stop()
        log_writer.join(60)
    report = merged_reports(writers)
    found = listed_messages(clients.channel, log_writer.service)

    assert report.errors == [], _log_tail(system)
    assert not log_writer.is_alive()
    assert log_writer.errors == [], _log_tail(system)
    assert len(log_writer.acknowledged) > 0
    assert report.retried + log_writer.retried > 0, f"killing {component} hit no call"
    assert {message for message, count in found.items() if count > 1} == set()
    assert set(found) == log_writer.messages()
    _assert_writes_survived(clients, group_id, report)
    _assert_balances_exact(clients, group_id, system)


def test_concurrent_writers_on_one_group(system, clients):
    group_id, members = create_group(clients, 4)
    writers = _writers(clients, group_id, members, 32, operations=15, creates=0.7)

    run_writers(writers, timeout=90)
    report = merged_reports(writers)

    assert report.errors == [], _log_tail(system)
    assert len(report.creates) >= 32 * 5
    _assert_writes_survived(clients, group_id, report)
    _assert_balances_exact(clients, group_id, system)
