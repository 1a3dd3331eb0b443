"""The gateway's health: each public service reports its backend's health.

One watcher per public service streams `grpc.health.v1.Health/Watch` from the
backend for that service name and copies the status into the gateway's own
health servicer. A backend that cannot be reached makes its services
NOT_SERVING until a later watch succeeds. A backend without the health service
(UNIMPLEMENTED) leaves its services SERVING, because the gateway cannot know
better.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateway.proxy import BackendPool
from gateway.services import PublicService

_LOGGER = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# Delay before watching a failed backend again, doubled up to the maximum.
_INITIAL_RETRY_SECONDS = 0.5
_MAX_RETRY_SECONDS = 5.0


class BackendHealthWatcher:
    """Mirror each backend's per-service health into the gateway's servicer."""

    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        pool: BackendPool,
        services: Iterable[PublicService],
    ) -> None:
        self._servicer = servicer
        self._pool = pool
        self._services = list(services)
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        """Start one watch task per public service."""
        for service in self._services:
            backend = self._pool.backends[service.backend]
            stub = health_pb2_grpc.HealthStub(backend.channel)
            task = asyncio.create_task(
                self._watch(stub, service), name=f"health-watch {service.full_name}"
            )
            self._tasks.append(task)

    async def stop(self) -> None:
        """Cancel the watch tasks and wait for them to end."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _watch(self, stub: health_pb2_grpc.HealthStub, service: PublicService):
        name = service.full_name
        delay = _INITIAL_RETRY_SECONDS
        last_error = None
        while True:
            request = health_pb2.HealthCheckRequest(service=name)
            try:
                async for response in stub.Watch(request):
                    delay = _INITIAL_RETRY_SECONDS
                    last_error = None
                    serving = response.status == SERVING
                    await self._servicer.set(name, SERVING if serving else NOT_SERVING)
                # The backend ended the stream because it is stopping, so watch
                # again.
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                    _LOGGER.info(
                        "%s serves no health service; %s stays SERVING",
                        service.backend,
                        name,
                    )
                    return
                await self._servicer.set(name, NOT_SERVING)
                if error.code() != last_error:
                    _LOGGER.warning(
                        "health of %s at %s unknown (%s: %s); reporting NOT_SERVING",
                        name,
                        service.backend,
                        error.code().name,
                        error.details(),
                    )
                    last_error = error.code()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_RETRY_SECONDS)
