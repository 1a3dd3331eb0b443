"""The restart policy of `splitlog up --processes`: backoff and crash loops."""

from __future__ import annotations

import signal

from splitlog_cli.processes import (
    ExitHistory,
    Restart,
    RestartPolicy,
    exit_description,
)
from splitlog_runtime import config as config_module

POLICY = RestartPolicy(
    initial_delay=0.5, max_delay=300.0, crash_loop_after=5, stable_seconds=60.0
)


def _short_exits(
    history: ExitHistory, count: int, run_seconds: float = 1.0
) -> list[Restart]:
    """Record `count` runs of `run_seconds`, each ending with status 1.

    Returns the restart decided after each exit.
    """
    restarts = []
    now = 0.0
    for _ in range(count):
        history.record_start(now)
        now += run_seconds
        restart = history.record_exit(now, 1)
        restarts.append(restart)
        now += restart.delay
    return restarts


def test_delay_doubles_up_to_maximum():
    history = ExitHistory(RestartPolicy(max_delay=10.0))

    delays = [restart.delay for restart in _short_exits(history, 7)]

    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_default_backoff_reaches_five_minutes():
    history = ExitHistory(RestartPolicy())

    delays = [restart.delay for restart in _short_exits(history, 12)]

    assert delays[:5] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert delays[5:] == [16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0]


def test_crash_loop_after_five_short_exits():
    history = ExitHistory(POLICY)

    restarts = _short_exits(history, 7)

    assert [restart.crash_looping for restart in restarts[:5]] == [False] * 5
    assert restarts[5].crash_looping
    assert restarts[6].crash_looping
    assert restarts[5].exits == 6
    assert history.crash_looping


def test_runs_just_under_stable_seconds_crash_loop():
    history = ExitHistory(POLICY)

    restarts = _short_exits(history, 6, run_seconds=59.0)

    assert restarts[5].crash_looping
    assert restarts[5].run_seconds == 59.0


def test_stable_run_ends_crash_loop():
    history = ExitHistory(POLICY)
    _short_exits(history, 6)
    history.record_start(1000.0)

    still_short = history.forget_if_stable(1059.0)
    ended = history.forget_if_stable(1060.0)
    again = history.forget_if_stable(1061.0)
    restart = history.record_exit(1070.0, 1)

    assert not still_short
    assert ended
    assert not again
    assert not history.crash_looping
    assert restart.delay == 0.5
    assert restart.exits == 1
    assert restart.statuses == (1,)


def test_long_run_before_exit_resets_delay():
    history = ExitHistory(POLICY)
    _short_exits(history, 4)
    history.record_start(1000.0)

    restart = history.record_exit(1100.0, -signal.SIGKILL)

    assert restart.delay == 0.5
    assert restart.exits == 1
    assert restart.run_seconds == 100.0


def test_statuses_keep_last_six_exits():
    history = ExitHistory(POLICY)
    history.record_start(0.0)
    history.record_exit(1.0, -signal.SIGKILL)
    codes = [3] * 5 + [1]
    for second, code in enumerate(codes, start=2):
        history.record_start(float(second))
        restart = history.record_exit(second + 0.5, code)

    assert restart.statuses == (3, 3, 3, 3, 3, 1)
    assert restart.exits == 7


def test_delay_bounded_after_many_exits():
    history = ExitHistory(POLICY)

    restarts = _short_exits(history, 2000, run_seconds=0.1)

    assert restarts[-1].delay == 300.0
    assert restarts[-1].exits == 2000


def test_policy_from_config_takes_max_delay():
    config = config_module.load(
        environ={}, overrides={"restart_max_delay_seconds": "2"}
    )

    policy = RestartPolicy.from_config(config)

    assert policy.max_delay == 2.0
    assert policy.initial_delay == 0.5
    assert policy.delay(3) == 2.0


def test_exit_description_names_signal():
    assert exit_description(-signal.SIGKILL) == "signal SIGKILL"
    assert exit_description(3) == "status 3"
