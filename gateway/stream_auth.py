"""Credential checks during long-lived calls at the gateway, on both fronts.

A call is authenticated when it starts, but a tail or a client stream of log
writes can stay open for hours. So while such a call runs, the gateway checks
its credential again with user_service every `auth_cache_seconds` (every
`MIN_RECHECK_SECONDS` when that setting is 0), and once more right after the
credential's own expiry time. When the credential was revoked, has expired,
or no longer has the method's scope, the call ends with the error of that
check: UNAUTHENTICATED or PERMISSION_DENIED, with a message that gives the reason
and what to send next.

A check that fails because user_service is unavailable leaves the call open
and is retried at the next interval, so that a user_service restart does not
end every tail. The credential's expiry time is known at the gateway, so an
expired credential ends the call even then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from gateway.credential_cache import Checked
from splitlog_runtime import auth
from splitlog_runtime.errors import DomainError, Unauthenticated, Unavailable, clip

_LOGGER = logging.getLogger(__name__)

# Seconds between the checks of an open call's credential when
# `auth_cache_seconds` is 0, which checks every call.
MIN_RECHECK_SECONDS = 1.0
# Seconds after a credential's expiry time at which the gateway checks it.
# user_service's clock may lag the gateway's a little, and it must also find
# the credential expired.
EXPIRY_MARGIN_SECONDS = 0.05
# ErrorInfo reason of every rejected credential, at the start of a call or
# during it. `auth.CREDENTIAL_REASON_KEY` in its metadata gives the cause.
CREDENTIAL_INVALID = "CREDENTIAL_INVALID"

Item = TypeVar("Item")


class CredentialRejected(Exception):
    """The credential of an open call failed a check; `error` ends the call."""

    def __init__(self, error: DomainError) -> None:
        super().__init__(error.message)
        self.error = error


def ended_advice(method: str) -> str:
    """Return what a client sends after its open call ended at a credential check."""
    if method.endswith("/TailLogEntries"):
        return (
            "send the tail again with a valid credential and the resume_token "
            "(REST: resumeToken) of the last message received, so that no "
            "entry is lost"
        )
    if method.endswith("/StreamLogEntries"):
        return (
            "messages sent before the end may be stored; send them again with "
            "a valid credential and the same request_id each, so that none is "
            "stored twice"
        )
    return "send the call again with a valid credential"


async def watch_credential(
    method: str,
    checked: Checked,
    recheck: Callable[[], Awaitable[Checked]],
    interval: float,
) -> DomainError:
    """Check a credential until it fails, then return the error to end the call.

    Args:
      method: the call's method path, for the message and the log.
      checked: the result of the check that admitted the call.
      recheck: checks the credential again with user_service and the
        method's scope; raises the DomainError of a failed check.
      interval: seconds between checks; at most this long passes between a
        revocation and the end of the call.
    """
    expire_time = checked.expire_time
    advice = ended_advice(method)
    while True:
        delay = interval
        if expire_time is not None:
            until_expiry = expire_time - time.time() + EXPIRY_MARGIN_SECONDS
            delay = min(delay, max(until_expiry, 0.0))
        await asyncio.sleep(delay)
        try:
            checked = await recheck()
        except Unavailable as error:
            if expire_time is not None and time.time() >= expire_time:
                # The same reasons as when user_service finds it expired.
                expired = (
                    "API_KEY_EXPIRED"
                    if "/apiKeys/" in checked.principal
                    else "TOKEN_EXPIRED"
                )
                return Unauthenticated(
                    f"the credential of this open call expired at "
                    f"{_utc(expire_time)}, so the call ended; sign in again or "
                    f"create a new API key, then {advice}",
                    reason=CREDENTIAL_INVALID,
                    metadata={auth.CREDENTIAL_REASON_KEY: expired},
                )
            _LOGGER.warning(
                "could not check the credential of an open %s call again, so "
                "it stays open until the next check in %gs: %s",
                method,
                interval,
                error,
            )
            continue
        except DomainError as error:
            _LOGGER.info("ended an open %s call: %s", method, error)
            error.message = clip(
                f"{error.message}. This open call ended because of it; {advice}"
            )
            return error
        expire_time = checked.expire_time


def _utc(unix_seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_seconds))


async def until_failed(
    items: AsyncIterator[Item], watch: asyncio.Future[DomainError]
) -> AsyncIterator[Item]:
    """Yield the items of a stream until `watch` returns an error.

    Each item is awaited in a task of its own, raced against `watch`. When
    `watch` returns first, that task is cancelled, which ends the stream's
    backend call, and the stream is not read again. A cancelled `watch`, as
    when the backend call has ended, stops the race, and the stream is read
    to its end or its error.

    Raises:
      CredentialRejected: `watch` returned an error.
    """
    iterator = aiter(items)
    while True:
        step = asyncio.ensure_future(anext(iterator))
        try:
            if not watch.done():
                await asyncio.wait({step, watch}, return_when=asyncio.FIRST_COMPLETED)
            if _failed(watch):
                step.cancel()
                await asyncio.wait({step})
                if not step.cancelled():
                    # Read the outcome so that asyncio does not log it as lost.
                    step.exception()
                raise CredentialRejected(watch.result())
            item = await step
        except asyncio.CancelledError:
            step.cancel()
            raise
        except StopAsyncIteration:
            return
        yield item


def _failed(watch: asyncio.Future[DomainError]) -> bool:
    """Return whether `watch` returned an error, rather than being cancelled."""
    return watch.done() and not watch.cancelled()


async def run_until_failed(
    call: Awaitable[Item], watch: asyncio.Future[DomainError]
) -> Item:
    """Return what `call` returns, unless `watch` returns an error first.

    Raises:
      CredentialRejected: `watch` returned an error; `call` is then cancelled.
    """
    task = asyncio.ensure_future(call)
    try:
        if not watch.done():
            await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        if not _failed(watch):
            return await task
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()
    raise CredentialRejected(watch.result())
