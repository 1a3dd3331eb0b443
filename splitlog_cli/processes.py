"""`splitlog up --processes`: one supervised child process per component.

The children are `splitlog serve COMPONENT`, wired over loopback with the
environment that docker-compose.yml gives the containers. A component starts
once every component it depends on reports SERVING. The supervisor forwards
SIGTERM and SIGINT as SIGTERM in reverse start order, except that the
components that ship their log records (the gateway, then the other services)
stop before the log router and the log nodes, so their last records are
stored rather than dropped.

A child that exits on its own is started again after a delay that begins at
0.5 s and doubles with each exit, up to 10 s (see `RestartPolicy`). A child
that exits more than 5 times within 60 s makes the supervisor give up: it
stops every component and exits with status 1.
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
from splitlog_runtime.config import SETTINGS, SETTINGS_BY_NAME, Config
from splitlog_runtime.tls import ClientTls, TlsConfigError

_LOGGER = logging.getLogger(__name__)

# Seconds a child gets to report SERVING, migrations included.
STARTUP_TIMEOUT = 60.0
# Seconds past the grace period before a child that ignores SIGTERM is killed.
KILL_MARGIN = 5.0


@dataclass(frozen=True)
class RestartPolicy:
    """When the supervisor restarts a child that exited on its own.

    Attributes:
      initial_delay: seconds before the first restart.
      max_delay: maximum delay in seconds; each exit within `window` doubles
        the delay up to this.
      max_restarts: exits within `window` that are still restarted; one more
        makes the supervisor give up.
      window: length in seconds of the sliding window that counts exits.
    """

    initial_delay: float = 0.5
    max_delay: float = 10.0
    max_restarts: int = 5
    window: float = 60.0

    def describe(self) -> str:
        """Return the policy in one sentence, for help text."""
        return (
            f"a child that exits on its own is restarted after "
            f"{self.initial_delay:g}s, doubling with each exit up to "
            f"{self.max_delay:g}s; when one child exits more than "
            f"{self.max_restarts} times within {self.window:g}s, every component "
            "stops and the exit status is 1"
        )


RESTART_POLICY = RestartPolicy()


class ExitHistory:
    """The recent exits of one child, and the delay before its next restart."""

    def __init__(self, policy: RestartPolicy) -> None:
        self._policy = policy
        self._exits: deque[float] = deque()

    def record_exit(self, now: float) -> float | None:
        """Record an exit at monotonic time `now`.

        Returns:
          The seconds to wait before restarting the child, or None when it
          exited more than `max_restarts` times within the window.
        """
        self._exits.append(now)
        while now - self._exits[0] > self._policy.window:
            self._exits.popleft()
        count = len(self._exits)
        if count > self._policy.max_restarts:
            return None
        delay = self._policy.initial_delay * 2 ** (count - 1)
        return min(delay, self._policy.max_delay)

    @property
    def recent_exits(self) -> int:
        """Return the number of exits within the window at the last record."""
        return len(self._exits)


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
    """Starts, watches and stops the child processes."""

    def __init__(
        self,
        config: Config,
        signals: StopSignals,
        policy: RestartPolicy = RESTART_POLICY,
    ) -> None:
        self._config = config
        self._signals = signals
        self._policy = policy
        try:
            self._components = all_components(config)
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        self._by_name = {c.name: c for c in self._components}
        self._waves = start_waves(self._components)
        self._stop_order = stop_waves(self._components)
        self._children: dict[str, subprocess.Popen] = {}

    def run(self) -> int:
        """Run until a stop signal or until it gives up; return the exit status.

        Raises:
          StartupError: a port is taken or a child failed to start.
        """
        _check_fixed_ports(self._config, self._components)
        check_ports_free(self._config, self._components)
        self._signals.on_force(self._kill_all)
        try:
            status = self._watch() if self._start_all() else 0
        except BaseException:
            self._stop_all()
            raise
        clean = self._stop_all()
        return status or (0 if clean else 1)

    def _start_all(self) -> bool:
        """Start the children wave by wave; return False if stopped meanwhile."""
        for wave in self._waves:
            for component in wave:
                self._spawn(component)
            for component in wave:
                if not self._wait_until_serving(component):
                    return False
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
                STARTUP_TIMEOUT,
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
            raise StartupError(f"{component.name}: {exc}") from None
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

    def _watch(self) -> int:
        """Restart children that exit; return 1 on giving up, 0 on a stop signal."""
        histories = {name: ExitHistory(self._policy) for name in self._children}
        restart_at: dict[str, float] = {}
        while not self._signals.wait(timeout=0.2):
            now = time.monotonic()
            for name, child in self._children.items():
                if name in restart_at:
                    if now >= restart_at[name]:
                        del restart_at[name]
                        self._spawn(self._by_name[name])
                    continue
                if child.poll() is None:
                    continue
                delay = histories[name].record_exit(now)
                if delay is None:
                    _LOGGER.error(
                        "%s (pid %d) exited with %s, its exit number %d within "
                        "%gs, and at most %d are restarted; giving up and "
                        "stopping every component",
                        name,
                        child.pid,
                        exit_description(child.returncode),
                        histories[name].recent_exits,
                        self._policy.window,
                        self._policy.max_restarts,
                    )
                    return 1
                _LOGGER.warning(
                    "%s (pid %d) exited unexpectedly with %s; restarting it in "
                    "%.1fs (exit %d of at most %d within %gs)",
                    name,
                    child.pid,
                    exit_description(child.returncode),
                    delay,
                    histories[name].recent_exits,
                    self._policy.max_restarts,
                    self._policy.window,
                )
                restart_at[name] = now + delay
        return 0

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
