"""A lockout after repeated failed sign-ins for one email from one client.

`SignInThrottle` counts the failed sign-ins of each pair of an email and a
client host. After `max_failures` failures within `window_seconds`, SignIn
refuses that email from that client for `lockout_seconds` with
RESOURCE_EXHAUSTED and a RetryInfo, without checking the password.

Choices that keep the lockout from hurting the account's owner or telling
an attacker anything:

- The key includes the client, so a guesser at one address cannot lock the
  owner out at another. The client is the host that the gateway signed into
  the call (`Principal.client`); with auth_required off, the host in the
  gateway's `x-splitlog-client` metadata; else the call's own peer. An IPv6
  host counts by its /64 network, since one site can use every address in
  it (`splitlog_runtime.auth.client_key`).
- Unknown emails count and lock exactly like known ones, so the reply does
  not tell whether an account exists.
- Calls refused during a lockout neither count nor extend it, so the lockout
  ends `lockout_seconds` after it began, whatever the guesser does.
- A successful sign-in clears the pair's count.
- SetPassword counts a wrong `old_password` as a failure for the user's
  email, and is refused during its lockout, so a stolen access token
  cannot be used to guess the password either.
- Logs name the pair by a short hash of the email, because people sometimes
  type a password into the email field.

The counts live in memory: a restart clears them, and past `max_keys` pairs
the least recently used one is dropped.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from splitlog_runtime.errors import ResourceExhausted
from user_service import domain

_LOGGER = logging.getLogger(__name__)

# Pairs of email and client kept at most.
MAX_TRACKED_PAIRS = 100_000


@dataclass
class _Record:
    failures: list[float] = field(default_factory=list)
    locked_until: float = 0.0


def email_tag(email: str) -> str:
    """Return a short, stable tag for an email, to name it in logs."""
    digest = hashlib.sha256(domain.normalise_email(email).encode()).hexdigest()
    return f"email#{digest[:12]}"


class SignInThrottle:
    """Failed sign-in counts per email and client, with a temporary lockout.

    Args:
      max_failures: failures within the window that start a lockout; 0 turns
        the lockout off.
      window_seconds: how far back failures count.
      lockout_seconds: how long a lockout lasts.
      max_keys: pairs kept at most.
      clock: monotonic time in seconds.

    Raises:
      ValueError: a setting is out of range; the message names it.
    """

    def __init__(
        self,
        max_failures: int,
        window_seconds: float,
        lockout_seconds: float,
        *,
        max_keys: int = MAX_TRACKED_PAIRS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_failures < 0:
            raise ValueError(
                f"auth_signin_max_failures must be 0 (no lockout) or more, got "
                f"{max_failures}"
            )
        if max_failures and not (window_seconds > 0 and lockout_seconds > 0):
            raise ValueError(
                "auth_signin_window_seconds and auth_signin_lockout_seconds must "
                f"be above 0 while auth_signin_max_failures is set, got "
                f"{window_seconds} and {lockout_seconds}"
            )
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.lockout_seconds = lockout_seconds
        self._max_keys = max_keys
        self._clock = clock
        self._records: OrderedDict[tuple[str, str], _Record] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(email: str, client: str) -> tuple[str, str]:
        return domain.normalise_email(email), client or "unknown"

    def check(self, email: str, client: str) -> None:
        """Raise while the pair is locked out.

        Raises:
          ResourceExhausted: the pair failed too often; RetryInfo carries the
            seconds until the lockout ends.
        """
        if not self.max_failures:
            return
        now = self._clock()
        with self._lock:
            record = self._records.get(self._key(email, client))
            remaining = record.locked_until - now if record else 0.0
        if remaining > 0:
            raise self._locked_error(remaining)

    def failed(self, email: str, client: str) -> None:
        """Count a failed sign-in; start a lockout at `max_failures`."""
        if not self.max_failures:
            return
        now = self._clock()
        key = self._key(email, client)
        with self._lock:
            record = self._records.get(key)
            if record is None:
                record = self._records[key] = _Record()
                if len(self._records) > self._max_keys:
                    self._records.popitem(last=False)
            else:
                self._records.move_to_end(key)
            since = now - self.window_seconds
            record.failures = [at for at in record.failures if at > since]
            record.failures.append(now)
            locked = len(record.failures) >= self.max_failures
            if locked:
                record.failures.clear()
                record.locked_until = now + self.lockout_seconds
        if locked:
            _LOGGER.warning(
                "sign-in locked for %s from %s for %gs after %d failed sign-ins "
                "within %gs",
                email_tag(email),
                key[1],
                self.lockout_seconds,
                self.max_failures,
                self.window_seconds,
            )

    def succeeded(self, email: str, client: str) -> None:
        """Clear the pair's failures after a successful sign-in."""
        if not self.max_failures:
            return
        with self._lock:
            self._records.pop(self._key(email, client), None)

    def _locked_error(self, remaining: float) -> ResourceExhausted:
        seconds = math.ceil(remaining)
        return ResourceExhausted(
            f"too many wrong passwords (SignIn, or SetPassword's old_password) "
            f"for this account from this client: {self.max_failures} within "
            f"{self.window_seconds:g}s (auth_signin_max_failures, "
            f"auth_signin_window_seconds); SignIn and SetPassword are refused "
            f"for {self.lockout_seconds:g}s (auth_signin_lockout_seconds); "
            f"retry in {seconds}s",
            reason="SIGN_IN_THROTTLED",
            metadata={
                "limit": "auth_signin_max_failures",
                "max_failures": str(self.max_failures),
                "window_seconds": f"{self.window_seconds:g}",
                "lockout_seconds": f"{self.lockout_seconds:g}",
            },
            retry_delay=remaining,
        )

    def __len__(self) -> int:
        return len(self._records)
