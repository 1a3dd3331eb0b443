"""The gateway's short-lived memory of credentials that user_service accepted.

With `auth_required` on, every gateway call needs the principal and scopes
of its credential. Asking user_service's CheckCredential on each call costs a
round trip, so the gateway keeps each accepted credential for
`auth_cache_seconds`, and never past the expiry that CheckCredential
returns (the access token's `exp`, or the API key's expire time).

Only accepted credentials are kept: a rejected one is checked again on its
next call. Entries are keyed by the SHA-256 digest of the credential, so the
cache contains no token or key. Beyond `MAX_ENTRIES` credentials, the least
recently used one is dropped.

Concurrent calls with a credential that is not kept share one
CheckCredential. A revocation that passes through this gateway calls
`forget_user` or `clear`. Both also stop checks that are running from being
kept, because such a check may have read the credential before the
revocation.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from splitlog.auth.v1 import credential_service_pb2 as cred_pb

# Maximum number of credentials kept. Past it, the least recently used is dropped.
MAX_ENTRIES = 4096

Check = Callable[[str], Awaitable[cred_pb.CheckCredentialResponse]]


@dataclass(frozen=True, slots=True)
class Checked:
    """The result of a successful check: the principal, its scopes and expiry."""

    principal: str
    scopes: frozenset[str]
    # Unix time in seconds at which the credential stops working on its own,
    # or None for an API key that does not expire.
    expire_time: float | None = None

    @property
    def user(self) -> str:
        """The user of the principal, `users/{user}`."""
        return "/".join(self.principal.split("/")[:2])


def _digest(credential: str) -> bytes:
    return hashlib.sha256(credential.encode("utf-8", "surrogatepass")).digest()


class CredentialCache:
    """Accepted credentials for up to `seconds` each; 0 seconds keeps none.

    Used from one event loop only.
    """

    def __init__(
        self,
        seconds: float,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds = seconds
        self._max_entries = max_entries
        self._clock = clock
        # digest -> (check result, clock time after which the entry is stale)
        self._entries: OrderedDict[bytes, tuple[Checked, float]] = OrderedDict()
        self._running: dict[bytes, asyncio.Task[Checked]] = {}
        # Counts the revocations, so that a check that was running during
        # one is not kept.
        self._generation = 0

    @property
    def enabled(self) -> bool:
        return self.seconds > 0

    def __len__(self) -> int:
        return len(self._entries)

    async def check(self, credential: str, check: Check) -> Checked:
        """Return the kept result for a credential, or call `check` for one.

        Raises:
          whatever `check` raises; a failed check is not kept.
        """
        if not self.enabled:
            return checked_reply(await check(credential))
        key = _digest(credential)
        entry = self._entries.get(key)
        if entry is not None:
            checked, stale_at = entry
            if self._clock() < stale_at:
                self._entries.move_to_end(key)
                return checked
            del self._entries[key]
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(
                self._check_and_keep(key, credential, check, self._generation)
            )
            task.add_done_callback(_consume_error)
            self._running[key] = task
        # A caller that gives up does not cancel the check that others share.
        return await asyncio.shield(task)

    async def _check_and_keep(
        self, key: bytes, credential: str, check: Check, generation: int
    ) -> Checked:
        try:
            reply = await check(credential)
        finally:
            if self._running.get(key) is asyncio.current_task():
                del self._running[key]
        checked = checked_reply(reply)
        if generation == self._generation:
            self._keep(key, checked)
        return checked

    def _keep(self, key: bytes, checked: Checked) -> None:
        lifetime = self.seconds
        if checked.expire_time is not None:
            lifetime = min(lifetime, checked.expire_time - time.time())
        if lifetime <= 0:
            return
        self._entries[key] = (checked, self._clock() + lifetime)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def forget_user(self, user: str) -> None:
        """Drop the credentials of a user (`users/{user}`): tokens and keys."""
        self._generation += 1
        self._running.clear()
        stale = [
            key for key, (checked, _) in self._entries.items() if checked.user == user
        ]
        for key in stale:
            del self._entries[key]

    def clear(self) -> None:
        """Drop every credential."""
        self._generation += 1
        self._running.clear()
        self._entries.clear()


def checked_reply(reply: cred_pb.CheckCredentialResponse) -> Checked:
    expire_time = None
    if reply.HasField("expire_time"):
        expire_time = reply.expire_time.seconds + reply.expire_time.nanos / 1e9
    return Checked(reply.principal, frozenset(reply.scopes), expire_time)


def _consume_error(task: asyncio.Task) -> None:
    # Every caller may have given up before the check failed; reading the
    # error keeps asyncio from logging it as never retrieved.
    if not task.cancelled():
        task.exception()
