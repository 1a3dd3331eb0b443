"""Request limits that the services check, set once from the settings.

`start_service` installs the limits of its settings for the whole process,
as it does with the signer, so every component of one process shares them.
Code that checks a limit reads `current()` at call time; until a service
starts, the defaults apply.

Two limits cannot be raised past the width of the database column that
stores the value. A larger setting stops the service with a message that
names the setting and the ceiling.

The message size limit, `max_message_bytes`, is enforced in two layers.
grpc's core reads request messages up to `receive_ceiling(max_message_bytes)`
and rejects larger ones with its own text. splitlog code then rejects each
request message over `max_message_bytes` with `message_too_large`, whose
message names the setting. A server that only other components call may
accept a bounded allowance on top of the setting (`headroom_bytes`), for the
framing that those components add to a message that a client sent.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from splitlog_runtime.errors import FieldViolation, ResourceExhausted

# The receive limit of grpc's core is this many times `max_message_bytes`.
# A client that overshoots the setting by less than this factor, for example
# with a batch that grew, gets the message that names the setting. A hostile
# client still cannot make a server buffer more than this many times the
# setting per message.
RECEIVE_CEILING_FACTOR = 4

# grpc reads its message size channel arguments as a C int, and a larger value
# raises OverflowError when the server is built (grpcio 1.85).
GRPC_MAX_MESSAGE_LENGTH = 2**31 - 1

# ErrorInfo reason of a request over max_message_bytes, as sent or once its
# entries are expanded. REST replies carry it with HTTP 413.
REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"


@dataclass(frozen=True)
class RequestLimits:
    """The limits, each named as its setting."""

    max_page_size: int = 1000
    max_display_name_length: int = 100
    max_notes_length: int = 2000
    expense_max_description_length: int = 200
    # Groups of this app are friends and households; a larger split is more
    # likely a mistake or an attack than a real bill.
    expense_max_participants: int = 500
    # Most bills have one payer and a shared one a few. Applying an expense
    # costs about payers x participants, so this keeps the largest one quick.
    expense_max_payers: int = 50
    # A 10,000-row Splitwise export fits in one batch: with 4 members its
    # request is about 3.5 MB, below the default 16 MiB message limit.
    expense_max_batch_creates: int = 10_000
    # balance_service allocates every payer and participant pair and writes
    # a line per participant when it applies a batch, and every group's
    # balances wait behind it. Expenses of one payer and 200 participants
    # took about 1 s of CPU time there per 50,000 pairs, on a shared 2-core
    # machine (`python -m bench.wide_batch`).
    expense_max_batch_pairs: int = 50_000
    auth_min_password_length: int = 12


DEFAULTS = RequestLimits()

# The widths of the columns that store these values (VARCHAR(n)).
CEILINGS = {
    "max_display_name_length": 100,
    "expense_max_description_length": 200,
}

_current = DEFAULTS


def current() -> RequestLimits:
    """Return the limits in force in this process."""
    return _current


def from_config(config: Any) -> RequestLimits:
    """Read and check the limits from settings.

    Raises:
      ValueError: a limit is below 1, or above its column's width; the
        message names the setting.
    """
    values = {}
    for item in fields(RequestLimits):
        value = getattr(config, item.name)
        if value < 1:
            raise ValueError(f"{item.name} must be 1 or more, got {value}")
        ceiling = CEILINGS.get(item.name)
        if ceiling is not None and value > ceiling:
            raise ValueError(
                f"{item.name} must be at most {ceiling}, the width of the "
                f"database column that stores the value, got {value}"
            )
        values[item.name] = value
    return RequestLimits(**values)


def install(limits: RequestLimits) -> None:
    """Make `limits` the ones in force in this process."""
    global _current
    _current = limits


def with_headroom(max_message_bytes: int, headroom_bytes: int) -> int:
    """Return `max_message_bytes` plus an allowance, within grpc's C int."""
    return min(max_message_bytes + headroom_bytes, GRPC_MAX_MESSAGE_LENGTH)


def receive_ceiling(max_message_bytes: int) -> int:
    """Return the receive limit of grpc's core for a `max_message_bytes` setting."""
    return min(max_message_bytes * RECEIVE_CEILING_FACTOR, GRPC_MAX_MESSAGE_LENGTH)


def message_too_large(
    size: int, max_message_bytes: int, headroom_bytes: int = 0
) -> ResourceExhausted:
    """Build the error for a request message of `size` bytes over the limit.

    `headroom_bytes` is the allowance of a server that only other components
    call; the message then names the setting and the allowance.
    """
    metadata = {
        "limit": "max_message_bytes",
        "max_message_bytes": str(max_message_bytes),
        "message_bytes": str(size),
    }
    if headroom_bytes:
        limit = with_headroom(max_message_bytes, headroom_bytes)
        metadata["headroom_bytes"] = str(headroom_bytes)
        over = (
            f"over {limit} bytes, the max_message_bytes setting "
            f"({max_message_bytes}) plus {headroom_bytes} bytes for the framing "
            "that components add"
        )
    else:
        over = f"over max_message_bytes ({max_message_bytes})"
    return ResourceExhausted(
        f"the request message is {size} bytes, {over}; send a smaller message "
        "or raise max_message_bytes",
        reason=REQUEST_TOO_LARGE,
        metadata=metadata,
    )


def expanded_too_large(
    message: str,
    field: str,
    description: str,
    *,
    request_bytes: int,
    expanded_bytes: int,
    max_message_bytes: int,
) -> ResourceExhausted:
    """Build the error for a request whose entries, once expanded, are too large.

    The server copies shared fields of some requests into each entry, so the
    request fits in `max_message_bytes` but its `expanded_bytes` do not. The
    error has the reason and metadata of `message_too_large`, plus
    `expanded_bytes`, and names the largest contributor as `field`.
    """
    return ResourceExhausted(
        message,
        reason=REQUEST_TOO_LARGE,
        metadata={
            "limit": "max_message_bytes",
            "max_message_bytes": str(max_message_bytes),
            "message_bytes": str(request_bytes),
            "expanded_bytes": str(expanded_bytes),
        },
        field_violations=[FieldViolation(field, description, REQUEST_TOO_LARGE)],
    )
