"""Measure the router's request digest of a log write (`request_ids.request_digest`).

Run `python -m bench.request_digest`. It builds WriteLogEntriesRequests of
100 and 10,000 entries from `bench.log_entries` and parses them as the
router receives them. It prints the process CPU time of one digest, per
request and per entry, and that of its two steps: the deterministic
encoding and the blake2b hash.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from functools import partial

from bench.log_entries import EntryFactory
from log_service.request_ids import DIGEST_BYTES, request_digest
from splitlog.logs.v1 import logs_service_pb2 as pb

ENTRIES_PER_RUN = 200_000


def cpu_seconds_per_call(call, rounds: int) -> float:
    start = time.process_time()
    for _ in range(rounds):
        call()
    return (time.process_time() - start) / rounds


def main() -> None:
    factory = EntryFactory()
    now = time.time_ns()
    for size in (100, 10_000):
        request = pb.WriteLogEntriesRequest(
            entries=[factory.entry(now - index * 1000) for index in range(size)],
            request_id=str(uuid.uuid4()),
        )
        raw = request.SerializeToString()
        parsed = pb.WriteLogEntriesRequest.FromString(raw)
        rounds = max(1, ENTRIES_PER_RUN // size)
        digest = cpu_seconds_per_call(partial(request_digest, parsed), rounds)
        encode = cpu_seconds_per_call(
            partial(parsed.SerializeToString, deterministic=True), rounds
        )
        hashed = cpu_seconds_per_call(
            partial(hashlib.blake2b, raw, digest_size=DIGEST_BYTES), rounds
        )
        print(
            f"{size} entries ({len(raw):,} bytes): digest {digest * 1e6:.0f} us "
            f"per request, {digest / size * 1e6:.2f} us per entry (encoding "
            f"{encode / size * 1e6:.2f}, blake2b {hashed / size * 1e6:.2f})"
        )


if __name__ == "__main__":
    main()
