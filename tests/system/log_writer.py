"""A thread that writes log batches through the gateway as a careful client.

Each batch carries a `request_id` and is sent again under the same id until
it is acknowledged, so the log service must store each entry exactly once.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid

import grpc

from splitlog.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from tests.system.money_support import CALL_TIMEOUT, RETRY_PAUSE, RETRYABLE


class LogWriter(threading.Thread):
    """Write batches of `batch_size` entries for one service until `stop()`.

    A batch that still fails with a retryable status at `deadline` (monotonic
    time) ends the thread with an entry in `errors`.
    """

    def __init__(self, channel: grpc.Channel, batch_size: int, deadline: float) -> None:
        super().__init__(name="log-writer", daemon=True)
        self.stub = logs_service_pb2_grpc.LogsServiceStub(channel)
        self.service = f"fault-{uuid.uuid4().hex[:8]}"
        self.batch_size = batch_size
        self.deadline = deadline
        self.acknowledged: list[str] = []
        self.retried = 0
        self.errors: list[str] = []
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def messages(self) -> set[str]:
        return {
            f"{label}.{index}"
            for label in self.acknowledged
            for index in range(self.batch_size)
        }

    def run(self) -> None:
        while not self._stopping.is_set():
            label = f"batch-{len(self.acknowledged)}"
            request = logs_service_pb2.WriteLogEntriesRequest(
                request_id=str(uuid.uuid4())
            )
            for index in range(self.batch_size):
                request.entries.add(service=self.service, message=f"{label}.{index}")
            try:
                self._send(request)
            except grpc.RpcError as error:
                self.errors.append(f"{label}: {error.code().name} {error.details()}")
                return
            self.acknowledged.append(label)
            time.sleep(0.02)

    def _send(self, request: logs_service_pb2.WriteLogEntriesRequest) -> None:
        while True:
            try:
                self.stub.WriteLogEntries(request, timeout=CALL_TIMEOUT)
                return
            except grpc.RpcError as error:
                if error.code() not in RETRYABLE or time.monotonic() > self.deadline:
                    raise
                self.retried += 1
                time.sleep(RETRY_PAUSE)


def listed_messages(channel: grpc.Channel, service: str) -> collections.Counter:
    """Count how often the log service lists each message of `service`."""
    stub = logs_service_pb2_grpc.LogsServiceStub(channel)
    found: collections.Counter = collections.Counter()
    token = ""
    while True:
        response = stub.ListLogEntries(
            logs_service_pb2.ListLogEntriesRequest(
                services=[service], page_size=1000, page_token=token
            ),
            timeout=CALL_TIMEOUT * 2,
        )
        found.update(entry.message for entry in response.entries)
        token = response.next_page_token
        if not token:
            return found
