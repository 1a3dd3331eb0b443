"""`splitlog up --processes`: one supervised child process per component.

The children are `splitlog serve COMPONENT`, wired over loopback with the
environment that docker-compose.yml gives the containers. A component starts
once every component it depends on reports SERVING. The supervisor forwards
SIGTERM and SIGINT as SIGTERM in reverse start order, except that the
components that ship their log records (the gateway, then the other services)
stop before the log router and the log nodes, so their last records are
stored rather than dropped.

Before the system is ready for the first time, a child that exits, or does
not report SERVING within startup_timeout_seconds, makes the supervisor stop what it
started and exit with status 1. Such a failure (invalid settings, another
process holding a component's files) needs the operator before anything can
work.

After that, a child that exits on its own is started again after a delay
(see `RestartPolicy`). The delay begins at 0.5 s and doubles with each exit
that follows a run shorter than 60 s, up to restart_max_delay_seconds
(300 s by default). A run of 60 s starts it again from 0.5 s. A child that
exits more than 5 times in a row, each time within 60 s of its start, is
crash-looping. Each of its exits is logged at ERROR with its recent exit
statuses and the next delay, and it is still restarted at that backoff until
a run of 60 s, logged at INFO, ends the crash loop.

Why the supervisor backs off rather than giving up:

- It never stops the other components because one crash-loops. Stopping
  them would not repair the failing one, and they keep serving what does not
  need it. A log shard goes on without a crashed follower, and with quorum
  `all` its writes go on once the leader drops the follower from the
  in-sync set.
- It keeps retrying rather than leaving the child stopped. The usual causes
  of a crash loop, such as a full disk, a port that another program took or
  a database that is down, clear without any change to splitlog. `up` has no
  command to restart one component, so a child left stopped would stay down
  until the whole system restarted.
- The rule is the same for every component, redundant or not. A
  crash-looping gateway, money service, log router or single-replica log
  node leaves part of the system unavailable either way, and exiting would
  take the rest down with it. Which part is down shows in `splitlog health`
  at the gateway, in `splitlog logs cluster` for the log nodes, and in the
  supervisor's ERROR records, which it ships as service `splitlog`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from splitlog_cli.console import address_rows, print_ready
from splitlog_cli.errors import StartupError
from splitlog_cli.health import wait_until_serving
from splitlog_cli.ports import check_ports_free
from splitlog_cli.settings import env_text
from splitlog_cli.signals import SUPERVISOR_PID_ENV, StopSignals
from splitlog_cli.topology import (
    GATEWAY,
    LOG_ROUTER,
    Component,
    all_components,
    grpc_address,
    local_environment,
)
from splitlog_runtime import auth
from splitlog_runtime.config import (
    RESTART_INITIAL_DELAY_SECONDS,
    RESTART_STABLE_SECONDS,
    SETTINGS,
    SETTINGS_BY_NAME,
    Config,
)
from splitlog_runtime.tls import ClientTls, TlsConfigError

_LOGGER = logging.getLogger(__name__)

# Seconds past the grace period before a child that ignores SIGTERM is killed.
KILL_MARGIN = 5.0


@dataclass(frozen=True)
class RestartPolicy:
    """When the supervisor restarts a child that exited on its own.

    An exit is short when the child ran less than `stable_seconds` since its
    start. Short exits in a row raise the delay and, past
    `crash_loop_after`, make the child crash-looping.

    Attributes:
      initial_delay: seconds before the restart that follows the first short
        exit.
      max_delay: maximum delay in seconds; each further short exit doubles
        the delay up to this.
      crash_loop_after: short exits in a row that count as ordinary crashes;
        one more makes the child crash-looping.
      stable_seconds: seconds of running that reset the delay and end a
        crash loop.
    """

    initial_delay: float = RESTART_INITIAL_DELAY_SECONDS
    max_delay: float = SETTINGS_BY_NAME["restart_max_delay_seconds"].default
    crash_loop_after: int = 5
    stable_seconds: float = RESTART_STABLE_SECONDS

    @classmethod
    def from_config(cls, config: Config) -> RestartPolicy:
        """Return the default policy with the configured maximum delay."""
        return cls(max_delay=config.restart_max_delay_seconds)

    def delay(self, exits: int) -> float:
        """Return the seconds before the restart after `exits` short exits."""
        # Past 2**64 times the initial delay any maximum is reached, and a
        # bounded exponent keeps a child that crashes for weeks from
        # overflowing the float.
        exponent = min(exits - 1, 64)
        return min(self.initial_delay * 2.0**exponent, self.max_delay)

    def describe(self) -> str:
        """Return the policy in one sentence, for help text."""
        return (
            f"a child that exits on its own is restarted after "
            f"{self.initial_delay:g}s, doubling with each exit within "
            f"{self.stable_seconds:g}s of its start up to "
            f"{self.max_delay:g}s (--restart-max-delay-seconds); a child that "
            f"exits like that more than {self.crash_loop_after} times in a row "
            "is crash-looping, logged at ERROR and still restarted at that "
            "backoff, and the other components keep running. A child that "
            "fails before the system is first ready stops every component, and "
            "the exit status is 1"
        )


RESTART_POLICY = RestartPolicy()


@dataclass(frozen=True)
class Restart:
    """The supervisor's decision after one exit of a child.

    Attributes:
      delay: seconds to wait before starting the child again.
      run_seconds: seconds the child ran, from its start to this exit.
      exits: short exits in a row, this one included.
      crash_looping: whether `exits` is past the policy's crash_loop_after.
      statuses: return codes of the last short exits in a row, oldest first;
        at most crash_loop_after + 1 of them.
    """

    delay: float
    run_seconds: float
    exits: int
    crash_looping: bool
    statuses: tuple[int, ...]


class ExitHistory:
    """The short exits in a row of one child, and the delay before its restart."""

    def __init__(self, policy: RestartPolicy) -> None:
        self._policy = policy
        self._started: float | None = None
        self._exits = 0
        self._statuses: deque[int] = deque(maxlen=policy.crash_loop_after + 1)

    @property
    def crash_looping(self) -> bool:
        return self._exits > self._policy.crash_loop_after

    def record_start(self, now: float) -> None:
        """Record that the child was started at monotonic time `now`."""
        self._started = now

    def record_exit(self, now: float, returncode: int) -> Restart:
        """Record an exit at monotonic time `now` and decide on the restart."""
        self.forget_if_stable(now)
        self._exits += 1
        self._statuses.append(returncode)
        return Restart(
            delay=self._policy.delay(self._exits),
            run_seconds=0.0 if self._started is None else now - self._started,
            exits=self._exits,
            crash_looping=self.crash_looping,
            statuses=tuple(self._statuses),
        )

    def forget_if_stable(self, now: float) -> bool:
        """Forget the short exits once the child has run for stable_seconds.

        Returns:
          True when this ends a crash loop.
        """
        if self._started is None or now - self._started < self._policy.stable_seconds:
            return False
        ended_crash_loop = self.crash_looping
        self._exits = 0
        self._statuses.clear()
        return ended_crash_loop


def exit_description(returncode: int) -> str:
    """Describe a child's exit status, naming the signal that killed it."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"status {returncode}"


def start_waves(components: tuple[Component, ...]) -> list[list[Component]]:
    """Group components so that each group depends only on earlier groups.

    Raises:
      ValueError: the dependencies form a cycle or name an unknown component.
    """
    waves: list[list[Component]] = []
    started: set[str] = set()
    remaining = list(components)
    while remaining:
        wave = [c for c in remaining if set(c.depends_on) <= started]
        if not wave:
            names = ", ".join(c.name for c in remaining)
            raise ValueError(f"unresolvable dependencies among: {names}")
        waves.append(wave)
        started.update(c.name for c in wave)
        remaining = [c for c in remaining if c.name not in started]
    return waves


def stop_waves(components: tuple[Component, ...]) -> list[list[Component]]:
    """Group components in the order to stop them, first group first.

    This is the start order reversed, with every component that ships its
    log records stopped before the log router, and so before the log nodes.

    Raises:
      ValueError: the dependencies form a cycle or name an unknown component.
    """
    # Stopping is ordered as if each log shipper depended on the log router.
    ordered = tuple(
        replace(component, depends_on=(*component.depends_on, LOG_ROUTER))
        if component.ships_logs
        else component
        for component in components
    )
    by_name = {component.name: component for component in components}
    return [
        [by_name[component.name] for component in wave]
        for wave in reversed(start_waves(ordered))
    ]


def child_environment(component: Component, config: Config) -> dict[str, str]:
    """Return the environment of a component's child process.

    Every resolved setting is passed on, so flags given to the supervisor
    reach the children, and the component's wiring variables come on top.
    """
    env = dict(os.environ)
    for setting in SETTINGS:
        value = getattr(config, setting.name)
        if isinstance(value, Path):
            value = value.resolve()
        env[setting.env] = env_text(value)
    env.update(local_environment(component, config))
    env[SUPERVISOR_PID_ENV] = str(os.getpid())
    return env


def gateway_client_tls(config: Config) -> ClientTls | None:
    """Return how the supervisor reaches a gateway that serves TLS, or None.

    It trusts tls_ca_file (the system's roots when empty) and, when the
    gateway requires client certificates, presents the gateway's own
    certificate and key.
    """
    # NOTE: the supervisor dials the loopback address, so the health wait
    # passes only if the gateway's certificate names 127.0.0.1 (or ::1). With
    # mutual TLS, that certificate must also allow client authentication.
    if not config.tls_cert_file:
        return None
    if not config.tls_client_ca_file:
        return ClientTls(ca_file=config.tls_ca_file)
    return ClientTls(
        ca_file=config.tls_ca_file,
        cert_file=config.tls_cert_file,
        key_file=config.tls_key_file,
    )


class Supervisor:
    """Starts, watches and stops the child processes.

    `on_serving`, when given, is called with a component's name each time a
    component reports SERVING during the first start, in start order.
    """

    def __init__(
        self,
        config: Config,
        signals: StopSignals,
        policy: RestartPolicy | None = None,
        on_serving: Callable[[str], None] | None = None,
    ) -> None:
        self._config = config
        self._on_serving = on_serving
        self._signals = signals
        self._policy = policy or RestartPolicy.from_config(config)
        try:
            self._components = all_components(config)
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        self._by_name = {c.name: c for c in self._components}
        self._waves = start_waves(self._components)
        self._stop_order = stop_waves(self._components)
        self._children: dict[str, subprocess.Popen] = {}
        self._histories = {c.name: ExitHistory(self._policy) for c in self._components}

    def run(self) -> int:
        """Run until a stop signal; return 0 if every running child stopped cleanly.

        Raises:
          StartupError: a port is taken or a child failed to start; whatever
            had started is stopped first.
        """
        _check_fixed_ports(self._config, self._components)
        check_ports_free(self._config, self._components)
        self._signals.on_force(self._kill_all)
        try:
            if self._start_all():
                self._watch()
        except BaseException:
            self._stop_all()
            raise
        return 0 if self._stop_all() else 1

    def _start_all(self) -> bool:
        """Start the children wave by wave; return False if stopped meanwhile."""
        for wave in self._waves:
            for component in wave:
                self._spawn(component)
            for component in wave:
                if not self._wait_until_serving(component):
                    return False
                if self._on_serving is not None:
                    self._on_serving(component.name)
        ports = {c.name: c.grpc_port(self._config) for c in self._components}
        ports["http"] = self._config.http_port
        pids = {name: child.pid for name, child in self._children.items()}
        print_ready(address_rows(self._config, ports, pids))
        return True

    def _spawn(self, component: Component) -> None:
        command = [sys.executable, "-m", "splitlog_cli", *component.command]
        # A process group of its own keeps the terminal's Ctrl-C away from the
        # child; the supervisor forwards one SIGTERM instead.
        child = subprocess.Popen(
            command,
            env=child_environment(component, self._config),
            stdin=subprocess.DEVNULL,
            process_group=0,
        )
        self._children[component.name] = child
        self._histories[component.name].record_start(time.monotonic())
        _LOGGER.info("started %s (pid %d)", component.name, child.pid)

    def _wait_until_serving(self, component: Component) -> bool:
        child = self._children[component.name]

        def abort() -> str | None:
            if self._signals.requested:
                return "stop requested"
            if child.poll() is not None:
                return (
                    f"{component.name} (pid {child.pid}) exited with status "
                    f"{child.returncode} while starting; its log is above"
                )
            return None

        address = grpc_address(component, self._config)
        tls = None
        if component.name == GATEWAY.name:
            tls = gateway_client_tls(self._config)
        try:
            wait_until_serving(
                address,
                self._config.startup_timeout_seconds,
                abort=abort,
                tls=tls,
                metadata=self._health_metadata(),
            )
        except TlsConfigError as exc:
            raise StartupError(str(exc)) from None
        except RuntimeError as exc:
            if self._signals.requested:
                return False
            raise StartupError(str(exc)) from None
        except TimeoutError as exc:
            raise StartupError(
                f"{component.name}: {exc}. If it was only slow to start, as on a "
                "loaded host, raise startup_timeout_seconds "
                "(--startup-timeout-seconds or SPLITLOG_STARTUP_TIMEOUT_SECONDS)"
            ) from None
        return True

    def _health_metadata(self) -> Callable[[], tuple[tuple[str, str], ...]]:
        """Return what builds the metadata of each health check of a child.

        With auth_required, each check carries the service principal signed
        with the auth secret, as calls between components do, because a
        gateway with auth_open_health off rejects an unsigned one.

        Raises:
          StartupError: the configured auth secret is too short.
        """
        if not self._config.auth_required:
            return tuple
        try:
            secret = auth.load_secret(self._config.auth_secret, self._config.data_dir)
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        signer = auth.PrincipalSigner(secret)
        principal = auth.Principal(auth.SERVICE_PRINCIPAL)
        return lambda: signer.metadata(principal)

    def _watch(self) -> None:
        """Restart each child that exits, after its backoff, until a stop signal."""
        restart_at: dict[str, float] = {}
        while not self._signals.wait(timeout=0.2):
            now = time.monotonic()
            for name, child in self._children.items():
                history = self._histories[name]
                if name in restart_at:
                    if now >= restart_at[name]:
                        del restart_at[name]
                        self._spawn(self._by_name[name])
                    continue
                if child.poll() is None:
                    if history.forget_if_stable(now):
                        _LOGGER.info(
                            "%s (pid %d) has run for %gs since its restart, so it "
                            "is no longer crash-looping; its next exit is "
                            "restarted after %gs",
                            name,
                            child.pid,
                            self._policy.stable_seconds,
                            self._policy.initial_delay,
                        )
                    continue
                restart = history.record_exit(now, child.returncode)
                self._log_exit(name, child.pid, restart)
                restart_at[name] = now + restart.delay

    def _log_exit(self, name: str, pid: int, restart: Restart) -> None:
        status = exit_description(restart.statuses[-1])
        if not restart.crash_looping:
            _LOGGER.warning(
                "%s (pid %d) exited unexpectedly with %s after running %.1fs; "
                "restarting it in %gs (%d exits in a row within %gs of a start; "
                "more than %d make it crash-looping)",
                name,
                pid,
                status,
                restart.run_seconds,
                restart.delay,
                restart.exits,
                self._policy.stable_seconds,
                self._policy.crash_loop_after,
            )
            return
        _LOGGER.error(
            "%s (pid %d) is crash-looping: it exited unexpectedly with %s after "
            "running %.1fs, %d exits in a row within %gs of a start (last exit "
            "statuses: %s); restarting it in %gs, and each further exit doubles "
            "the delay up to %gs until a run lasts %gs; the other components "
            "keep running",
            name,
            pid,
            status,
            restart.run_seconds,
            restart.exits,
            self._policy.stable_seconds,
            ", ".join(exit_description(code) for code in restart.statuses),
            restart.delay,
            self._policy.max_delay,
            self._policy.stable_seconds,
        )

    def _stop_all(self) -> bool:
        """Stop the running children in `stop_waves` order; True if all exit 0."""
        clean = True
        for wave in self._stop_order:
            running = [
                (c.name, self._children[c.name])
                for c in wave
                if c.name in self._children and self._children[c.name].poll() is None
            ]
            for _, child in running:
                child.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + self._config.grace_seconds + KILL_MARGIN
            for name, child in running:
                clean = self._reap(name, child, deadline) and clean
        return clean

    def _reap(self, name: str, child: subprocess.Popen, deadline: float) -> bool:
        try:
            status = child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _LOGGER.warning("%s (pid %d) ignored SIGTERM; killing it", name, child.pid)
            child.kill()
            status = child.wait()
        if status != 0:
            _LOGGER.warning(
                "%s (pid %d) exited with status %d", name, child.pid, status
            )
        return status == 0

    def _kill_all(self) -> None:
        for child in self._children.values():
            if child.poll() is None:
                child.kill()


def _check_fixed_ports(config: Config, components: tuple[Component, ...]) -> None:
    for component in components:
        if component.is_log_node and component.node_port == 0:
            raise StartupError(
                f"up --processes needs a fixed port for every component, but log "
                f"node {component.node_id} has port 0; set --log-node-port or "
                "--log-nodes"
            )
        for name in component.port_settings:
            if getattr(config, name) == 0:
                setting = SETTINGS_BY_NAME[name]
                raise StartupError(
                    f"up --processes needs a fixed port for every component, but "
                    f"{setting.flag} ({setting.env}) is 0; set a port number"
                )
