"""The gateway's health: each public service reports its backend's health.

One watcher per public service streams `grpc.health.v1.Health/Watch` from the
backend for that service name and copies the status into the gateway's own
health servicer. A backend that cannot be reached makes its services
NOT_SERVING until a later watch succeeds. A backend without the health service
(UNIMPLEMENTED) makes its services SERVING, because the gateway cannot know
better.

A Watch stream stays open while its backend hangs. grpc's keepalive notices a
stopped process only up to 40 s later, and never notices a backend whose
handler threads are all blocked, because grpc itself still answers its pings.
So one prober per backend also sends `Health/Check` every `probe_seconds`,
with that deadline. After `PROBE_MISSES` checks in a row without a reply, every service
of that backend is NOT_SERVING, whatever its Watch stream last sent. The first
reply ends that, and each service takes its watched status again.

Checks run on the backend's handler threads, so they also time out when
those threads are all busy with slow calls. `BackendPool.unresponsive_error`
therefore rejects calls at once only while the backend also completed no
forwarded call within the last `PROBE_MISSES * probe_seconds`.

The whole-server status `""` is SERVING only while every public service is, so
`splitlog health` on the gateway fails as soon as one backend is down. The
gateway's own services stay SERVING from start to stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway import stream_writes
from gateway.proxy import Backend, BackendPool
from gateway.services import PublicService

_LOGGER = logging.getLogger(__name__)
_WATCH = "/grpc.health.v1.Health/Watch"

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
OVERALL = ""

# Delay before watching a failed backend again, doubled up to the maximum.
_INITIAL_RETRY_SECONDS = 0.5
_MAX_RETRY_SECONDS = 5.0

#: Health checks in a row without a reply after which a backend's services are
#: reported NOT_SERVING.
PROBE_MISSES = 2

# Only a check that runs out of time counts as a miss. UNAVAILABLE means the
# backend cannot be reached, which its failing Watch stream reports already,
# so it is neither a miss nor a reply and leaves the backend's state as it
# was. Any other status, such as UNIMPLEMENTED from a backend without the
# health service, is a reply and shows that the backend runs calls.


class HealthServicer(health_pb2_grpc.HealthServicer):
    """The asyncio health service of the gateway.

    It behaves like `grpc_health.v1.health.aio.HealthServicer`, except that
    `enter_graceful_shutdown()` also ends every open Watch stream, right after
    sending it NOT_SERVING. The stock servicer keeps those streams open, so a
    stopping server waited out its whole grace period for them.
    """

    def __init__(self) -> None:
        self._statuses: dict[str, int] = {}
        self._version = 0
        self._changed = asyncio.Condition()
        self._shutting_down = False

    async def Check(self, request: health_pb2.HealthCheckRequest, context):
        status = self._statuses.get(request.service)
        if status is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"the gateway reports no health for service {request.service!r}",
            )
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context):
        sent = None
        while True:
            # Nothing awaits between reading the version and the status, and
            # after a write the status is read again, so no change is lost.
            version = self._version
            status = self._statuses.get(request.service, SERVICE_UNKNOWN)
            if status != sent:
                await stream_writes.write(
                    context, health_pb2.HealthCheckResponse(status=status), _WATCH
                )
                sent = status
                continue
            if self._shutting_down:
                return
            async with self._changed:
                await self._changed.wait_for(lambda seen=version: self._version != seen)

    def status(self, service: str) -> int | None:
        """Return the current status of a service, or None if it is unknown."""
        return self._statuses.get(service)

    async def set(self, service: str, status: int) -> None:
        """Set the status of a service; ignored once shutdown has begun."""
        if self._shutting_down or self._statuses.get(service) == status:
            return
        self._statuses[service] = status
        await self._notify()

    async def enter_graceful_shutdown(self) -> None:
        """Report NOT_SERVING for every service for good and end the Watch streams."""
        if self._shutting_down:
            return
        self._shutting_down = True
        for service in self._statuses:
            self._statuses[service] = NOT_SERVING
        await self._notify()

    async def _notify(self) -> None:
        self._version += 1
        async with self._changed:
            self._changed.notify_all()


class BackendHealthWatcher:
    """Mirror each backend's per-service health into the gateway's servicer.

    Args:
      servicer: the gateway's health servicer.
      pool: the backends and their channels.
      services: the public services that the gateway forwards.
      probe_seconds: seconds between two health checks of each backend, and
        the deadline of each; 0 turns the checks off.
    """

    def __init__(
        self,
        servicer: HealthServicer,
        pool: BackendPool,
        services: Iterable[PublicService],
        probe_seconds: float = 0.0,
    ) -> None:
        self._servicer = servicer
        self._pool = pool
        self._services = list(services)
        self._probe_seconds = probe_seconds
        self._tasks: list[asyncio.Task] = []
        # The last status that each service's Watch stream reported.
        self._watched: dict[str, int] = {
            service.full_name: NOT_SERVING for service in self._services
        }
        # Backends that missed PROBE_MISSES checks in a row and have not
        # replied since. The pool's set, so that its calls fail at once
        # while the backend also completes no calls.
        self._unresponsive = pool.unresponsive
        pool.progress_window_seconds = PROBE_MISSES * probe_seconds

    def start(self) -> None:
        """Start one watch task per public service and one prober per backend."""
        for service in self._services:
            backend = self._pool.backends[service.backend]
            stub = health_pb2_grpc.HealthStub(backend.channel)
            task = asyncio.create_task(
                self._watch(stub, service), name=f"health-watch {service.full_name}"
            )
            self._tasks.append(task)
        if self._probe_seconds <= 0:
            return
        probed = {service.backend for service in self._services}
        for name in sorted(probed):
            backend = self._pool.backends[name]
            task = asyncio.create_task(
                self._probe(backend), name=f"health-probe {name}"
            )
            self._tasks.append(task)

    async def stop(self) -> None:
        """Cancel the watch and probe tasks, which cancels their calls, and wait."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _report(self, service: str, status: int) -> None:
        self._watched[service] = status
        await self._publish()

    async def _publish(self) -> None:
        """Set each public service's status and the whole server's from them."""
        every_serving = True
        for public in self._services:
            status = self._watched[public.full_name]
            if public.backend in self._unresponsive:
                status = NOT_SERVING
            every_serving = every_serving and status == SERVING
            await self._servicer.set(public.full_name, status)
        await self._servicer.set(OVERALL, SERVING if every_serving else NOT_SERVING)

    async def _probe(self, backend: Backend) -> None:
        """Check the backend's health every probe_seconds; track its replies."""
        stub = health_pb2_grpc.HealthStub(backend.channel)
        request = health_pb2.HealthCheckRequest(service=OVERALL)
        loop = asyncio.get_running_loop()
        misses = 0
        last_failure = ""
        while True:
            started = loop.time()
            try:
                misses = await self._check_once(stub, request, backend, misses)
                last_failure = ""
            except Exception as exc:
                # The probe goes on, because a backend without one is never
                # reported hung again.
                failure = f"{type(exc).__name__}: {exc}"
                if failure != last_failure:
                    _LOGGER.exception(
                        "health check of %s at %s failed unexpectedly; checking "
                        "again every %gs, without logging the same error again",
                        backend.name,
                        backend.address,
                        self._probe_seconds,
                    )
                last_failure = failure
            elapsed = loop.time() - started
            await asyncio.sleep(max(self._probe_seconds - elapsed, 0.0))

    async def _check_once(
        self,
        stub: health_pb2_grpc.HealthStub,
        request: health_pb2.HealthCheckRequest,
        backend: Backend,
        misses: int,
    ) -> int:
        """Send one health check and update the backend's state.

        Returns:
          the checks in a row that the backend has left without a reply.
        """
        try:
            await stub.Check(request, timeout=self._probe_seconds)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                return misses
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                await self._missed(backend, misses + 1, error)
                return misses + 1
        if backend.name in self._unresponsive:
            self._unresponsive.discard(backend.name)
            _LOGGER.info(
                "%s at %s replies to health checks again",
                backend.name,
                backend.address,
            )
            await self._publish()
        return 0

    async def _missed(
        self, backend: Backend, misses: int, error: grpc.aio.AioRpcError
    ) -> None:
        """Report a backend NOT_SERVING once it has missed PROBE_MISSES checks."""
        if misses < PROBE_MISSES or backend.name in self._unresponsive:
            return
        self._unresponsive.add(backend.name)
        _LOGGER.warning(
            "%s at %s did not reply to %d health checks in a row "
            "(last: %s: %s); reporting its services NOT_SERVING",
            backend.name,
            backend.address,
            misses,
            error.code().name,
            error.details(),
        )
        await self._publish()

    async def _watch(self, stub: health_pb2_grpc.HealthStub, service: PublicService):
        """Watch one service's health at its backend until cancelled.

        A failed stream is opened again after a delay that doubles up to
        _MAX_RETRY_SECONDS. Each run of the same failure is logged once.
        Closing the channel during a Watch call also ends the loop, because
        grpc then raises CancelledError from the call.
        """
        name = service.full_name
        delay = _INITIAL_RETRY_SECONDS
        last_error = None
        last_failure = ""
        while True:
            request = health_pb2.HealthCheckRequest(service=name)
            try:
                async for response in stub.Watch(request):
                    serving = response.status == SERVING
                    await self._report(name, SERVING if serving else NOT_SERVING)
                    delay = _INITIAL_RETRY_SECONDS
                    last_error = None
                    last_failure = ""
                # The backend ended the stream because it is stopping, so watch
                # again.
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                    _LOGGER.info(
                        "%s serves no health service; reporting %s as SERVING",
                        service.backend,
                        name,
                    )
                    await self._report(name, SERVING)
                    return
                await self._report(name, NOT_SERVING)
                if error.code() != last_error:
                    _LOGGER.warning(
                        "health of %s at %s unknown (%s: %s); reporting NOT_SERVING",
                        name,
                        service.backend,
                        error.code().name,
                        error.details(),
                    )
                    last_error = error.code()
                last_failure = ""
            except Exception as exc:
                # The watch goes on, because a service whose watch ended would
                # keep its last status for good. Cancellation is no Exception,
                # so stop() still ends the loop.
                failure = f"{type(exc).__name__}: {exc}"
                if failure != last_failure:
                    _LOGGER.exception(
                        "health watch of %s at %s failed unexpectedly; reporting "
                        "NOT_SERVING and watching again, without logging the "
                        "same error again",
                        name,
                        service.backend,
                    )
                last_failure = failure
                last_error = None
                await self._report(name, NOT_SERVING)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_RETRY_SECONDS)
