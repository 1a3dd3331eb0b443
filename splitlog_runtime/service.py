"""Start one service: its server, its database and migrations, its health."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import grpc

from splitlog_runtime import auth, limits, private_files
from splitlog_runtime.config import Config
from splitlog_runtime.database import Database, safe_url, upgrade
from splitlog_runtime.server import ServiceHost, create_server

_LOGGER = logging.getLogger(__name__)

#: Seconds between two checks that a service's database still responds.
DATABASE_CHECK_SECONDS = 1.0


class DatabaseWatch:
    """Keep a service's health in step with its database.

    A thread sends the database a trivial query every `interval` seconds. The
    host reports NOT_SERVING while the query fails and SERVING again once it
    succeeds. The service itself keeps running, and its pool reconnects.
    Nothing changes once the host has begun to stop.
    """

    def __init__(
        self,
        host: ServiceHost,
        database: Database,
        interval: float = DATABASE_CHECK_SECONDS,
    ) -> None:
        self._host = host
        self._database = database
        self._interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"{host.name}-database-watch", daemon=True
        )
        self.reachable = True

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=self._interval + 10)

    def check(self) -> bool:
        """Check the database once, flip health if its state changed, return it."""
        reachable = self._database.ping()
        if self._host.stopped or self._stopping.is_set():
            return reachable
        if reachable and not self.reachable:
            _LOGGER.warning(
                "%s: the database responds again; serving",
                self._host.name,
                extra={"component": self._host.name},
            )
            self._host.mark_serving()
        elif not reachable and self.reachable:
            _LOGGER.warning(
                "%s: the database does not respond; NOT_SERVING until it does",
                self._host.name,
                extra={"component": self._host.name},
            )
            self._host.mark_not_serving()
        self.reachable = reachable
        return reachable

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            self.check()


def start_service(
    name: str,
    config: Config,
    register: Iterable[Callable[[grpc.Server], None]],
    service_names: Iterable[str],
    *,
    address: str | None = None,
    database: Database | None = None,
    migrations_dir: Path | None = None,
    stream_workers: int = 0,
    interceptors: Iterable[grpc.ServerInterceptor] = (),
) -> ServiceHost:
    """Start a service and return its running host.

    The server starts first and reports NOT_SERVING while the migrations run,
    then SERVING, and after that NOT_SERVING whenever the database stops
    responding (see `DatabaseWatch`). The database is disposed when the host stops. With
    `auth_required`, the server accepts only calls that the gateway signed
    (health, and reflection when `auth_open_reflection`, excepted), and the
    process signs its own calls to other components.

    Args:
      name: component name, such as `user_service`; also the key of its
        port setting.
      config: resolved settings.
      register: callables that add the servicers to the server.
      service_names: full names of the registered services.
      address: host:port to bind; defaults to the configured host and port.
      database: the service's database, if it has one.
      migrations_dir: the Alembic folder for that database.
      stream_workers: handler threads added to `workers` for long-lived
        calls, which the service must limit to that many at once.
      interceptors: interceptors that run before the others, such as a
        test's count of calls.
    """
    if address is None:
        address = f"{config.host}:{getattr(config, f'{name}_port')}"
    private_files.private_directory(config.data_dir)
    limits.install(limits.from_config(config))
    interceptors = list(interceptors)
    if config.auth_required:
        signer = auth.install_signer_from_settings(config.auth_secret, config.data_dir)
        open_names = auth.open_services(True, config.auth_open_reflection)
        interceptors.append(auth.ServiceAuthInterceptor(signer, open_names))
    host = create_server(
        name,
        register,
        service_names,
        address,
        workers=config.workers,
        stream_workers=stream_workers,
        max_message_bytes=config.max_message_bytes,
        reflection_enabled=config.reflection,
        interceptors=interceptors,
        max_concurrent_rpcs=config.max_concurrent_rpcs,
    )
    host.start()
    if database is not None:
        host.on_stop(database.dispose)
        _LOGGER.info(
            "%s storage: %s",
            name,
            safe_url(database.url),
            extra={"component": name},
        )
        if migrations_dir is not None:
            try:
                upgrade(database.engine, migrations_dir, f"alembic_version_{name}")
            except Exception:
                host.stop(0, reason="migrations failed")
                raise
    host.mark_serving()
    if database is not None:
        watch = DatabaseWatch(host, database)
        watch.start()
        host.on_stop(watch.stop)
    return host
