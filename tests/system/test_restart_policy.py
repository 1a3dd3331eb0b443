"""The restart policy of `splitlog up --processes`: backoff and giving up."""

from __future__ import annotations

import signal

from splitlog_cli.processes import ExitHistory, RestartPolicy, exit_description

POLICY = RestartPolicy(initial_delay=0.5, max_delay=10.0, max_restarts=5, window=60.0)


def test_delay_doubles_up_to_maximum():
    history = ExitHistory(RestartPolicy(max_restarts=10, window=600.0))

    delays = [history.record_exit(float(second)) for second in range(7)]

    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_gives_up_after_too_many_exits_in_window():
    history = ExitHistory(POLICY)

    delays = [history.record_exit(float(second)) for second in range(6)]

    assert None not in delays[:5]
    assert delays[5] is None


def test_exits_outside_window_forgotten():
    history = ExitHistory(POLICY)
    for second in range(5):
        history.record_exit(float(second))

    delay = history.record_exit(100.0)

    assert delay == 0.5
    assert history.recent_exits == 1


def test_exits_spread_over_window_never_give_up():
    history = ExitHistory(POLICY)

    delays = [history.record_exit(second * 13.0) for second in range(50)]

    assert None not in delays


def test_exit_description_names_signal():
    assert exit_description(-signal.SIGKILL) == "signal SIGKILL"
    assert exit_description(3) == "status 3"
