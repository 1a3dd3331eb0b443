"""The credential that the client commands send, and the saved sessions.

A command sends `authorization: Bearer <credential>` when it has one: the
`--token` value first, then `SPLITLOG_TOKEN`, then the session that
`splitlog auth signin` saved for the gateway address. Sessions live in
`$XDG_CONFIG_HOME/splitlog/sessions.json` (default `~/.config/splitlog/`),
mode 0600, one per gateway address, so a token is never sent to a gateway
that did not issue it. When a saved access token has expired or the gateway
rejects it, the command exchanges the refresh token for new tokens. A
long-running command such as `logs tail` does so each time the access token
expires, until the gateway rejects the refresh token.
A token that contains whitespace or a character outside printable ASCII
cannot go into a header, so the command exits with status 2 before any call
and names the option, variable or file that contains it.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc

from splitlog.auth.v1 import auth_service_pb2 as auth_pb2
from splitlog_cli.client.values import UsageError
from splitlog_runtime.private_files import (
    remove_abandoned_temporary_files,
    write_file_atomically,
)

TOKEN_ENV = "SPLITLOG_TOKEN"
SESSIONS_FILE = "sessions.json"
# Refresh a little before the recorded expiry, so that a token does not run
# out between the check and the server's verification.
_EXPIRY_MARGIN_SECONDS = 10.0
# Status codes of a failed RefreshToken call that do not mean that the gateway
# rejected the refresh token.
_TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    }
)


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Return `$XDG_CONFIG_HOME/splitlog`, or `~/.config/splitlog` without it."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base else Path.home() / ".config"
    return root / "splitlog"


@dataclass
class Session:
    """The tokens of one signed-in session with one gateway."""

    user: str
    access_token: str
    access_expire_time: float
    refresh_token: str
    refresh_expire_time: float

    @classmethod
    def from_tokens(cls, user: str, tokens: auth_pb2.SessionTokens) -> Session:
        return cls(
            user=user,
            access_token=tokens.access_token,
            access_expire_time=_seconds(tokens.access_token_expire_time),
            refresh_token=tokens.refresh_token,
            refresh_expire_time=_seconds(tokens.refresh_token_expire_time),
        )

    def access_expired(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return now + _EXPIRY_MARGIN_SECONDS >= self.access_expire_time

    def __repr__(self) -> str:
        # Keep the tokens out of tracebacks and debug output.
        return f"Session(user={self.user!r})"


def _seconds(stamp: Any) -> float:
    return stamp.seconds + stamp.nanos / 1e9


class SessionStore:
    """The saved sessions, keyed by gateway address, in a mode 0600 file.

    A file or an entry that cannot be read counts as no session, and a
    warning on stderr names the file and the fix. Saving a session writes
    a new file over it.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / SESSIONS_FILE
        # A command may read the file more than once, but warns once.
        self._warned = False

    def load(self, address: str) -> Session | None:
        """Return the session saved for `address`, or None."""
        entry = self._read(warn=True).get(address)
        if entry is None:
            return None
        session = _session_from(entry)
        if session is None:
            self._warn(
                f"the session saved for {address} in {self.path} is not the "
                "record that `splitlog auth signin` writes"
            )
        return session

    def save(self, address: str, session: Session) -> None:
        sessions = self._read(warn=False)
        sessions[address] = asdict(session)
        self._write(sessions)

    def remove(self, address: str) -> bool:
        """Remove the session of `address` and return whether there was one."""
        sessions = self._read(warn=True)
        if sessions.pop(address, None) is None:
            return False
        self._write(sessions)
        return True

    def _read(self, warn: bool) -> dict[str, Any]:
        """Return the sessions by address, or none when the file is unusable.

        With `warn`, an unusable file gets a warning on stderr.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
            data = json.loads(text)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # ValueError covers invalid UTF-8 and invalid JSON.
            if warn:
                self._warn(f"cannot read {self.path}: {exc}")
            return {}
        sessions = data.get("sessions") if isinstance(data, dict) else None
        if not isinstance(sessions, dict):
            if warn:
                self._warn(
                    f'{self.path} has no "sessions" object, so it is not '
                    "the file that `splitlog auth signin` writes"
                )
            return {}
        return sessions

    def _warn(self, problem: str) -> None:
        """Print on stderr, once, that the saved sessions cannot be used."""
        if self._warned:
            return
        self._warned = True
        print(
            f"splitlog: warning: {problem}. The command runs without a saved "
            "session. Sign in again with `splitlog auth signin --email EMAIL`, "
            f"which replaces it, or delete {self.path}",
            file=sys.stderr,
        )

    def _write(self, sessions: dict[str, Any]) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The new file is created with mode 0600, so that the tokens are
        # never readable by others, not even briefly.
        text = json.dumps({"sessions": sessions}, indent=2) + "\n"
        # Commands killed while they replaced the file leave temporary files.
        remove_abandoned_temporary_files(self.path)
        write_file_atomically(self.path, text.encode("utf-8"))


# Fields of a saved session and the types that their JSON values must have.
_SESSION_FIELDS = {
    "user": (str,),
    "access_token": (str,),
    "access_expire_time": (int, float),
    "refresh_token": (str,),
    "refresh_expire_time": (int, float),
}


def _session_from(entry: Any) -> Session | None:
    """Return the Session of a saved JSON entry, or None when it is malformed."""
    if not isinstance(entry, dict) or entry.keys() != _SESSION_FIELDS.keys():
        return None
    for name, types in _SESSION_FIELDS.items():
        value = entry[name]
        if isinstance(value, bool) or not isinstance(value, types):
            return None
    return Session(**entry)


Refresher = Callable[[str], auth_pb2.RefreshTokenResponse]


def token_problem(token: str) -> str | None:
    """Describe the first character that cannot go into a Bearer header.

    gRPC and HTTP accept only printable ASCII in a header value, and a token
    never contains whitespace. A line break is reported before any other
    character, because it is the usual cause: a whole multi-line output
    pasted as the token. Returns None for a token without such a character.
    The message names the character by its code point, so that no part of
    the secret is printed.
    """
    breaks = [index for index, character in enumerate(token) if character in "\r\n"]
    if breaks:
        return (
            f"it contains a line break at character {breaks[0] + 1} of "
            f"{len(token)}, so it is more than one line"
        )
    for index, character in enumerate(token, start=1):
        if character.isspace():
            description = f"whitespace (U+{ord(character):04X})"
        elif not " " < character < "\x7f":
            description = f"the character U+{ord(character):04X}"
        else:
            continue
        return f"it contains {description} at character {index} of {len(token)}"
    return None


def check_token(token: str, source: str, fix: str = "") -> None:
    """Reject a token that cannot be sent, naming where it came from.

    Args:
      source: the option, variable or file that contains the token, for the
        message.
      fix: what to do about it; by default, set `source` to the token alone.

    Raises:
      UsageError: the token contains whitespace or a character outside
        printable ASCII.
    """
    problem = token_problem(token)
    if problem is None:
        return
    fix = fix or (
        f"Set {source} to the token alone, for an API key what "
        "`splitlog auth keys create` prints on standard output"
    )
    raise UsageError(
        f"the token in {source} is invalid: {problem}; a token is one line of "
        f"printable ASCII without spaces. {fix}"
    )


class Credential:
    """The bearer credential of one command run, refreshed when it expires.

    `token` is a `--token` or `SPLITLOG_TOKEN` value (an access token or an
    API key), sent as is. Without it, the saved session of `address` is
    used, and `refresh` (set by the caller once a channel exists) renews it.

    Raises:
      UsageError: the saved session contains a token that cannot be sent.
    """

    def __init__(
        self, address: str, token: str | None, store: SessionStore | None
    ) -> None:
        self.address = address
        self._token = token or None
        self._store = store
        self._session = None if self._token or store is None else store.load(address)
        if self._session is not None and store is not None:
            for token in (self._session.access_token, self._session.refresh_token):
                check_token(
                    token,
                    f"the session saved for {address} in {store.path}",
                    "Sign in again with `splitlog auth signin --email EMAIL`, "
                    "which replaces it",
                )
        self.refresh: Refresher | None = None
        # The error of the RefreshToken call that rejected the refresh token.
        self.refresh_error: grpc.RpcError | None = None
        # Unix time at which this run got the current access token from
        # RefreshToken, or None.
        self._renewed_at: float | None = None
        # True once the gateway rejected the refresh token, which ends renewals.
        self._refresh_rejected = False
        self._lock = threading.Lock()

    @property
    def present(self) -> bool:
        return self._token is not None or self._session is not None

    @property
    def from_session(self) -> bool:
        return self._token is None and self._session is not None

    @property
    def user(self) -> str | None:
        """The signed-in user, `users/{user}`, or None when it is unknown.

        A saved session records its user. An access token names it in its
        `sub` claim, read here without checking the signature because the
        value only picks a default and the server verifies the token on every
        call. An API key is opaque, so its user is unknown.
        """
        if self._token is None:
            return self._session.user if self._session else None
        return token_subject(self._token)

    def bearer(self) -> str | None:
        """Return the credential to send.

        A saved access token that is about to expire is renewed first.
        """
        if self._token is not None:
            return self._token
        if self._session is None:
            return None
        if self._needs_renewal():
            self.renew()
        return self._session.access_token

    def renew(self, rejected: str | None = None) -> bool:
        """Exchange the refresh token for new tokens.

        `rejected` is the access token that the gateway just rejected, if
        any. Returns True when an access token other than `rejected` is
        ready to send. That token was either renewed now, or renewed meanwhile
        by another call of this run or by another command.

        Returns False without a saved session, after a failed RefreshToken
        call, and once the gateway has rejected the refresh token. Also
        returns False when the gateway rejects a token that this run got less
        than half its lifetime ago and that has not expired. A new token would
        be rejected too, and the command would only renew again and again.
        """
        with self._lock:
            if self._session is None or self.refresh is None:
                return False
            if self._refresh_rejected:
                return False
            if rejected is not None and rejected != self._session.access_token:
                return True
            if self._adopt_newer_session():
                return True
            if rejected is not None and self._renewed_recently():
                return False
            try:
                response = self.refresh(self._session.refresh_token)
            except grpc.RpcError as exc:
                self.refresh_error = exc
                # An unreachable or overloaded gateway may still accept the
                # refresh token later.
                self._refresh_rejected = exc.code() not in _TRANSIENT_CODES
                return False
            self._session = Session.from_tokens(response.user, response.tokens)
            self._renewed_at = time.time()
            if self._store is not None:
                self._store.save(self.address, self._session)
            return True

    def _needs_renewal(self) -> bool:
        """Return whether the access token expires within the margin.

        The margin is `_EXPIRY_MARGIN_SECONDS`. For a token that this run got,
        the margin is a quarter of the token's lifetime when that is shorter,
        so that a short-lived token is used for a while before it is renewed.
        """
        assert self._session is not None
        margin = _EXPIRY_MARGIN_SECONDS
        if self._renewed_at is not None:
            lifetime = self._session.access_expire_time - self._renewed_at
            margin = min(margin, max(0.0, lifetime / 4))
        return time.time() + margin >= self._session.access_expire_time

    def _renewed_recently(self) -> bool:
        """Return whether this run got the unexpired access token less than
        half its lifetime ago."""
        if self._renewed_at is None or self._session is None:
            return False
        now = time.time()
        expires = self._session.access_expire_time
        half_life = (expires - self._renewed_at) / 2
        return now < expires and now < self._renewed_at + half_life

    def _adopt_newer_session(self) -> bool:
        """Switch to tokens that another run saved since this one loaded them.

        Returns whether the adopted access token is still valid. The server
        signs a session out when its refresh token comes back after the
        reuse grace (`auth_refresh_reuse_grace_seconds`), so a long-running
        command must not present the refresh token that it loaded at start
        once another command has exchanged it.
        """
        if self._store is None or self._session is None:
            return False
        saved = self._store.load(self.address)
        if saved is None or saved.refresh_token == self._session.refresh_token:
            return False
        self._session = saved
        self._renewed_at = None
        return not saved.access_expired()


def token_subject(token: str) -> str | None:
    """Return the `users/{user}` in an access token's `sub` claim, or None.

    The signature is not checked, so use the result only as a default that
    the server checks again.
    """
    import jwt

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    subject = claims.get("sub")
    if isinstance(subject, str) and subject.startswith("users/"):
        return subject
    return None


class _Details(grpc.ClientCallDetails):
    def __init__(self, details: grpc.ClientCallDetails, bearer: str) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.credentials = details.credentials
        self.wait_for_ready = details.wait_for_ready
        self.compression = details.compression
        kept = [
            (key, value)
            for key, value in (details.metadata or ())
            if key.lower() != "authorization"
        ]
        self.metadata = [*kept, ("authorization", f"Bearer {bearer}")]


class BearerInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Add the credential to every call and retry a rejected unary call once.

    A unary call that fails with UNAUTHENTICATED while a saved session is in
    use is sent again after a refresh of the session's tokens. A streaming
    call is not sent again. Its caller decides whether to open it again, as
    `logs tail` does after `Credential.renew`.
    """

    def __init__(self, credential: Credential) -> None:
        self._credential = credential

    def _with_bearer(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        bearer = self._credential.bearer()
        return details if bearer is None else _Details(details, bearer)

    def intercept_unary_unary(self, continuation, client_call_details, request):
        bearer = self._credential.bearer()
        details = client_call_details
        if bearer is not None:
            details = _Details(client_call_details, bearer)
        outcome = continuation(details, request)
        if (
            isinstance(outcome, grpc.RpcError)
            and outcome.code() == grpc.StatusCode.UNAUTHENTICATED
            and self._credential.from_session
            and self._credential.renew(bearer)
        ):
            return continuation(self._with_bearer(client_call_details), request)
        return outcome

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._with_bearer(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, requests):
        return continuation(self._with_bearer(client_call_details), requests)

    def intercept_stream_stream(self, continuation, client_call_details, requests):
        return continuation(self._with_bearer(client_call_details), requests)
