"""A closed-loop gRPC load generator: N concurrent callers, calls/s and latency.

The client runs on grpc.aio in its own process, so one client process drives
up to a few thousand calls per second on one core without threads.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class LoadResult:
    """Measurements of one load run."""

    concurrency: int
    calls: int
    errors: int
    first_error: str
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds


def _percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, int(round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


async def _run(
    target: str,
    method: str,
    make_request: Callable[[int], bytes],
    concurrency: int,
    seconds: float,
    warmup: float,
    max_calls: int | None,
    metadata: tuple[tuple[str, str], ...],
) -> LoadResult:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(method)
        latencies: list[float] = []
        errors = 0
        first_error = ""
        counter = 0
        measuring = False
        stop_at = time.perf_counter() + warmup + seconds if seconds else float("inf")

        async def worker() -> None:
            nonlocal errors, counter, first_error
            while time.perf_counter() < stop_at:
                if max_calls is not None and counter >= max_calls:
                    return
                counter += 1
                request = make_request(counter)
                started = time.perf_counter()
                try:
                    await call(request, timeout=10, metadata=metadata)
                except grpc.aio.AioRpcError as error:
                    errors += 1
                    first_error = (
                        first_error or f"{error.code().name}: {error.details()}"
                    )
                    continue
                if measuring:
                    latencies.append(time.perf_counter() - started)

        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        await asyncio.sleep(warmup)
        measuring = True
        began = time.perf_counter()
        await asyncio.gather(*workers)
        elapsed = time.perf_counter() - began
    latencies.sort()
    return LoadResult(
        concurrency=concurrency,
        calls=len(latencies),
        errors=errors,
        first_error=first_error,
        seconds=elapsed,
        p50_ms=statistics.median(latencies) * 1000 if latencies else float("nan"),
        p99_ms=_percentile(latencies, 0.99) * 1000 if latencies else float("nan"),
    )


def run_load(
    target: str,
    method: str,
    make_request: Callable[[int], bytes],
    concurrency: int,
    seconds: float = 5.0,
    warmup: float = 1.0,
    max_calls: int | None = None,
    metadata: tuple[tuple[str, str], ...] = (),
) -> LoadResult:
    """Call `method` on `target` from `concurrency` callers for `seconds`.

    Args:
      target: host:port.
      method: full method path, e.g. `/splitlog.users.v1.UsersService/GetUser`.
      make_request: builds the serialized request for the n-th call.
      concurrency: number of callers, each with one call in flight.
      seconds: measured duration, after `warmup` seconds that are not counted;
        0 means no time limit, for a run bounded by `max_calls`.
      max_calls: stop after this many calls have been sent.
      metadata: sent with every call, such as an `authorization` entry.
    """
    return asyncio.run(
        _run(
            target,
            method,
            make_request,
            concurrency,
            seconds,
            warmup,
            max_calls,
            metadata,
        )
    )
