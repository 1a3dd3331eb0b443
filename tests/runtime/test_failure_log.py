"""The rate-limited log of a call that keeps failing."""

from __future__ import annotations

import logging

import pytest

from splitlog_runtime.failure_log import FailureLog, FailureLogs, Throttle

LOGGER = "splitlog.test.failures"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def failures(clock) -> FailureLog:
    return FailureLog(logging.getLogger(LOGGER), "calls to peer", 10.0, clock)


def _messages(caplog, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def test_first_failure_is_logged(failures, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    failures.failed("call to %s failed", "peer")
    assert _messages(caplog, logging.WARNING) == ["call to peer failed"]


def test_failures_within_interval_are_counted(failures, clock, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    for _ in range(4):
        failures.failed("call failed")
    clock.now += 10.0
    failures.failed("call failed")
    warnings = _messages(caplog, logging.WARNING)
    assert len(warnings) == 2
    assert "3 more such failures not logged" in warnings[1]


def test_success_after_failures_logs_recovery(failures, clock, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    failures.failed("call failed")
    failures.failed("call failed")
    clock.now += 2.5
    failures.succeeded()
    failures.succeeded()
    infos = _messages(caplog, logging.INFO)
    assert infos == ["calls to peer succeed again after 2 failures in 2.5s"]


def test_new_run_logs_its_first_failure(failures, clock, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    failures.failed("call failed")
    failures.succeeded()
    clock.now += 10.0
    failures.failed("call failed again")
    assert _messages(caplog, logging.WARNING) == [
        "call failed",
        "call failed again",
    ]


def test_new_run_within_interval_counted(failures, clock, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    failures.failed("call failed")
    failures.succeeded()
    clock.now += 1.0
    failures.failed("call failed again")
    failures.failed("call failed again")
    failures.succeeded()
    clock.now += 9.0
    failures.failed("call failed a third time")
    warnings = _messages(caplog, logging.WARNING)
    assert len(warnings) == 2, warnings
    assert warnings[0] == "call failed"
    assert warnings[1].startswith("call failed a third time (2 more such failures")
    infos = _messages(caplog, logging.INFO)
    assert infos == ["calls to peer succeed again after 1 failures in 0.0s"]


def test_alternating_calls_one_warning_per_interval(failures, clock, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    for _ in range(10):
        failures.failed("call failed")
        clock.now += 0.5
        failures.succeeded()
        clock.now += 0.5
    warnings = _messages(caplog, logging.WARNING)
    infos = _messages(caplog, logging.INFO)
    assert warnings == ["call failed"]
    assert infos == ["calls to peer succeed again after 1 failures in 0.5s"]
    for _ in range(10):
        failures.failed("call failed")
        clock.now += 0.5
        failures.succeeded()
        clock.now += 0.5
    warnings = _messages(caplog, logging.WARNING)
    assert len(warnings) == 2, warnings
    assert "9 more such failures not logged" in warnings[1]
    assert len(_messages(caplog, logging.INFO)) == 2


def test_outage_after_unlogged_run_gets_recovery(failures, clock, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    failures.failed("call failed")
    failures.succeeded()
    clock.now += 1.0
    failures.failed("call failed")
    # The outage goes on past the interval, so its warning is written late.
    clock.now += 9.0
    failures.failed("call failed")
    clock.now += 5.0
    failures.succeeded()
    assert len(_messages(caplog, logging.WARNING)) == 2
    infos = _messages(caplog, logging.INFO)
    assert infos[1] == "calls to peer succeed again after 2 failures in 14.0s"


def test_success_without_failures_logs_nothing(failures, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    failures.succeeded()
    assert caplog.records == []


@pytest.fixture
def keyed(clock) -> FailureLogs:
    return FailureLogs(
        logging.getLogger(LOGGER), lambda key: f"calls to {key}", 10.0, clock
    )


def test_keys_are_logged_apart(keyed, clock, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    keyed.failed("ann", "call to %s failed", "ann")
    keyed.failed("ann", "call to %s failed", "ann")
    keyed.failed("bob", "call to %s failed", "bob")
    clock.now += 10.0
    keyed.failed("ann", "call to %s failed", "ann")
    warnings = _messages(caplog, logging.WARNING)
    assert warnings[:2] == ["call to ann failed", "call to bob failed"]
    assert len(warnings) == 3
    assert "1 more such failures not logged" in warnings[2]


def test_keyed_success_logs_recovery_of_its_key(keyed, clock, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    keyed.failed("ann", "call failed")
    keyed.succeeded("bob")
    clock.now += 1.0
    keyed.succeeded("ann")
    infos = _messages(caplog, logging.INFO)
    assert infos == ["calls to ann succeed again after 1 failures in 1.0s"]


def test_failure_logged_at_given_level(failures, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    failures.failed("events cannot be applied", level=logging.ERROR)
    assert _messages(caplog, logging.ERROR) == ["events cannot be applied"]


@pytest.fixture
def throttle(clock) -> Throttle:
    return Throttle(10.0, clock)


def test_throttle_passes_first_event(throttle):
    assert throttle.allow() == 0


def test_throttle_counts_held_back_events(throttle, clock):
    assert throttle.allow() == 0
    assert [throttle.allow() for _ in range(3)] == [None, None, None]
    clock.now += 9.9
    assert throttle.allow() is None
    clock.now += 0.1
    assert throttle.allow() == 4
    assert throttle.allow() is None


def test_throttle_interval_starts_at_pass(throttle, clock):
    throttle.allow()
    clock.now += 25.0
    assert throttle.allow() == 0
    clock.now += 5.0
    assert throttle.allow() is None


def test_throttle_reset_passes_next_event(throttle):
    throttle.allow()
    throttle.allow()
    throttle.reset()
    assert throttle.allow() == 0


def test_throttle_passes_first_event_near_zero():
    # A monotonic clock may start near 0, as on a freshly booted machine.
    assert Throttle(60.0, lambda: 1.0).allow() == 0
