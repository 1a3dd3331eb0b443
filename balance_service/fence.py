"""Catching up with expense_service's ledger before a balance check.

The ledger consumer applies expense changes a moment after expense_service
acknowledges them, so a balance read can miss an expense that its caller
already saw acknowledged. That is fine for displays but not for CheckSettled,
which decides whether a member may leave or a group may be deleted.

`LedgerFence.catch_up` closes that gap. It requests the newest committed
ledger sequence from expense_service and waits until this service's cursor
has reached it. Every expense change acknowledged before the request has a
sequence at or below that position, so a read after `catch_up` counts it.
Given the group, expense_service first waits for every write to the group
that started before the request, so the position also covers writes that
checked membership before user_service marked a member as leaving.
Settlement writes are not in the ledger. CheckSettled waits for them in
this service (`splitlog_runtime.fencing.GroupWrites`).
"""

from __future__ import annotations

import logging
import threading
import time

import grpc
from grpc_status import rpc_status

from balance_service import storage
from splitlog.expenses.v1 import ledger_service_pb2 as ledger_pb
from splitlog.expenses.v1 import ledger_service_pb2_grpc as ledger_grpc
from splitlog_runtime.channels import insecure_channel
from splitlog_runtime.database import Database
from splitlog_runtime.errors import Unavailable, ended_its_attempts

_LOGGER = logging.getLogger(__name__)

#: Seconds between two reads of the stored cursor while no batch is reported
#: as applied. Another process on the same database may apply the events,
#: and its batches wake no one here.
RECHECK_SECONDS = 0.05
#: Seconds a caller should wait before retrying a check that failed here.
RETRY_DELAY_SECONDS = 1.0


class LedgerFence:
    """Waits until the balances include every acknowledged expense change.

    Args:
      database: this service's database, which contains the ledger cursor.
      target: host:port of expense_service.
      max_message_bytes: largest message the channel accepts.
    """

    def __init__(
        self,
        database: Database,
        target: str,
        max_message_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self._database = database
        self._target = target
        self._channel = insecure_channel(target, max_message_bytes)
        self._stub = ledger_grpc.LedgerServiceStub(self._channel)
        self._applied = threading.Condition()
        self._generation = 0
        # Description of the events the ledger consumer cannot apply, or None.
        self._problem: str | None = None

    def close(self) -> None:
        self._channel.close()

    def notify_applied(self) -> None:
        """Wake the waiting checks. The ledger consumer calls it after each batch."""
        with self._applied:
            self._generation += 1
            self._applied.notify_all()

    def report_problem(self, problem: str | None) -> None:
        """Record the events the consumer cannot apply, or None once it can.

        A check that times out adds the description to its error.
        """
        with self._applied:
            self._problem = problem

    def catch_up(self, timeout: float, subject: str, group: str = "") -> int:
        """Wait until the applied cursor reaches expense_service's newest event.

        Args:
          timeout: seconds to wait in total, including the call to
            expense_service.
          subject: the resource being checked, such as `groups/g1`, for the
            error message.
          group: the group, `groups/{group}`, whose writes in flight
            expense_service waits for before it returns the position; empty
            to wait for none.

        Returns:
          The ledger position that the balances now include.

        Raises:
          Unavailable: expense_service did not return its position, or the
            consumer did not apply the events up to it within `timeout`.
            Nothing was checked, and the same call may succeed later.
        """
        deadline = time.monotonic() + timeout
        position = self._ledger_position(timeout, subject, group)
        while True:
            with self._applied:
                generation = self._generation
            with self._database.transaction(read_only=True) as session:
                cursor = storage.read_cursor(session)
            if cursor >= position:
                return position
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _LOGGER.warning(
                    "balances of %s are behind the ledger: applied %d of %d "
                    "events after %.2fs",
                    subject,
                    cursor,
                    position,
                    timeout,
                )
                with self._applied:
                    problem = self._problem
                stuck = f" ({problem})" if problem else ""
                raise Unavailable(
                    f"cannot check the balances of {subject!r}: balance_service "
                    f"has applied expense changes up to ledger sequence {cursor}, "
                    f"but expense_service has committed up to {position}, and "
                    f"waiting for the rest timed out after {timeout:.2f}s{stuck}; "
                    "nothing was checked, retry later",
                    reason="LEDGER_NOT_CAUGHT_UP",
                    metadata={
                        "applied_sequence": str(cursor),
                        "ledger_sequence": str(position),
                        **({"problem": problem} if problem else {}),
                    },
                    retry_delay=RETRY_DELAY_SECONDS,
                    # The wait took the caller's whole deadline, so a retry
                    # by the caller's channel could only time out.
                    final_attempt=True,
                )
            self._wait_for_batch(generation, min(remaining, RECHECK_SECONDS))

    def _wait_for_batch(self, seen_generation: int, timeout: float) -> None:
        """Block until a batch is applied after `seen_generation`, or the timeout."""
        with self._applied:
            self._applied.wait_for(lambda: self._generation != seen_generation, timeout)

    def _ledger_position(self, timeout: float, subject: str, group: str) -> int:
        try:
            response = self._stub.GetLedgerPosition(
                ledger_pb.GetLedgerPositionRequest(group=group),
                timeout=max(timeout, 0.001),
            )
        except grpc.RpcError as exc:
            _LOGGER.warning(
                "GetLedgerPosition at %s for the check of %s failed: %s %s",
                self._target,
                subject,
                exc.code().name,
                exc.details(),
            )
            # expense_service's own errors, such as WRITES_IN_FLIGHT, explain
            # themselves, but grpc's connection errors name internal addresses.
            cause = exc.code().name
            if rpc_status.from_call(exc) is not None:
                cause = f"{cause}: {exc.details()}"
            raise Unavailable(
                f"cannot check the balances of {subject!r}: expense_service "
                f"did not return its ledger position ({cause}), so "
                "expenses acknowledged a moment ago might not be counted; "
                "nothing was checked, retry later",
                reason="EXPENSE_SERVICE_UNAVAILABLE",
                metadata={"service": "expense_service", "subject": subject},
                retry_delay=RETRY_DELAY_SECONDS,
                final_attempt=ended_its_attempts(exc),
            ) from None
        return response.last_sequence
