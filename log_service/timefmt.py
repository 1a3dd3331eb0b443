"""Parsing and formatting of log times at full nanosecond precision.

CLI flags and REST helpers take times as text. `datetime` holds only
microseconds, so this module parses the fraction of a second itself and does
all arithmetic on integer nanoseconds since the Unix epoch.

Accepted time forms (`parse_time`):
- RFC 3339 with `Z` or an offset: `2026-12-04T17:05:00.590180708Z`,
  `2026-12-04T22:35:00+05:30`. A space may replace the `T`.
- the same without a zone, or a date alone (`2026-12-04`, meaning midnight).
  These are read in the default zone, an IANA name such as
  `America/New_York`, and never in the server's local zone.
- an epoch number with a unit: `1700000000s`, `1700000000123ms`,
  `1700000000123456us`, `1700000000123456789ns`. A bare number is rejected
  because its unit would be a guess.
- `now`, `now-15m`, `now+1h`, or `-1h` for one hour ago.

Durations (`parse_duration`) are one or more numbers with a unit, such as
`90s`, `1h30m`, `1.5h` or `500ms`. Units: `ns`, `us` (or `µs`), `ms`, `s`,
`m`, `h`, `d` (24 hours).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

NANOS_PER_SECOND = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

DURATION_UNITS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": NANOS_PER_SECOND,
    "m": 60 * NANOS_PER_SECOND,
    "h": 3600 * NANOS_PER_SECOND,
    "d": 86400 * NANOS_PER_SECOND,
}
# Units an epoch number may carry. Minutes, hours and days since 1970 are
# more likely a relative time written without its minus sign.
EPOCH_UNITS = ("ns", "us", "µs", "ms", "s")

_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_UNIT = r"(?:ns|us|µs|ms|s|m|h|d)"
_DURATION_PART = re.compile(rf"({_NUMBER})({_UNIT})")
_DURATION = re.compile(rf"(?:{_NUMBER}{_UNIT})+")
_BARE_NUMBER = re.compile(rf"[+-]?{_NUMBER}")
_RELATIVE = re.compile(r"(?:now)?\s*([+-])\s*(\S+)", re.IGNORECASE)
_DATE_TIME = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"(?:[Tt ](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
    r"(?:\.(?P<fraction>[0-9]+))?"
    r"(?P<zone>[Zz]|[+-][0-9]{2}:[0-9]{2})?)?"
)

TIME_FORMS = (
    "RFC 3339 such as 2026-12-04T17:05:00.590180708Z or "
    "2026-12-04T22:35:00+05:30, a date-time without offset in the default "
    "zone, an epoch number with a unit such as 1700000000s or "
    "1700000000123ms, now, now-15m or -1h"
)
DURATION_FORMS = (
    "a number with a unit ns, us, ms, s, m, h or d, such as 90s, 15m, 1h30m, "
    "7d or 500ms"
)


def _scaled(number: str, unit_ns: int) -> int:
    """Multiply a decimal number text by `unit_ns` exactly.

    Digits below one nanosecond are dropped.
    """
    whole, _, fraction = number.partition(".")
    value = int(whole or "0") * unit_ns
    if fraction:
        value += int(fraction) * unit_ns // 10 ** len(fraction)
    return value


def parse_duration(text: str) -> int:
    """Parse a duration such as `15m` or `1h30m` into nanoseconds.

    Raises:
      ValueError: the text is not a duration; the message names the input
        and the accepted forms.
    """
    compact = text.strip()
    if not _DURATION.fullmatch(compact):
        raise ValueError(f"invalid duration {text!r}: expected {DURATION_FORMS}")
    return sum(
        _scaled(number, DURATION_UNITS[unit])
        for number, unit in _DURATION_PART.findall(compact)
    )


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA zone name such as UTC "
            "or America/New_York"
        ) from None


def _parse_date_time(match: re.Match[str], text: str, default_zone: str) -> int:
    fraction = match["fraction"] or ""
    if len(fraction) > 9:
        raise ValueError(
            f"invalid time {text!r}: the fraction of a second has more than 9 "
            "digits; nanoseconds are the finest unit"
        )
    zone_text = match["zone"]
    if zone_text is None:
        zone = _zone(default_zone)
    elif zone_text in ("Z", "z"):
        zone = UTC
    else:
        sign = -1 if zone_text[0] == "-" else 1
        hours, minutes = int(zone_text[1:3]), int(zone_text[4:6])
        if hours > 23 or minutes > 59:
            raise ValueError(
                f"invalid time {text!r}: offset {zone_text} is out of range; "
                "use -23:59 to +23:59"
            )
        zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        # fold=0: a repeated local time (when clocks go back) means its first
        # occurrence, and a skipped one takes the offset from before the jump.
        moment = datetime(
            int(match["year"]),
            int(match["month"]),
            int(match["day"]),
            int(match["hour"] or 0),
            int(match["minute"] or 0),
            int(match["second"] or 0),
            tzinfo=zone,
        )
    except ValueError as exc:
        raise ValueError(f"invalid time {text!r}: {exc}") from None
    elapsed = moment - _EPOCH
    seconds = elapsed.days * 86400 + elapsed.seconds
    return seconds * NANOS_PER_SECOND + int(fraction.ljust(9, "0") or 0)


def parse_time(
    text: str, *, default_zone: str = "UTC", now_ns: int | None = None
) -> int:
    """Parse a time in one of the module's forms into ns since the Unix epoch.

    Args:
      text: the time.
      default_zone: IANA zone for a date-time written without an offset.
      now_ns: the current time for `now` and relative forms; by default the
        system clock.

    Raises:
      ValueError: the text is not a time, or `default_zone` is unknown. The
        message names the input and the accepted forms.
    """
    stripped = text.strip()
    lowered = stripped.lower()

    if lowered == "now" or lowered.startswith(("now", "-", "+")):
        current = time.time_ns() if now_ns is None else now_ns
        if lowered == "now":
            return current
        relative = _RELATIVE.fullmatch(stripped)
        if relative is not None:
            sign, duration_text = relative.groups()
            try:
                duration = parse_duration(duration_text)
            except ValueError:
                pass
            else:
                return current - duration if sign == "-" else current + duration
        raise ValueError(f"invalid time {text!r}: expected {TIME_FORMS}")

    date_time = _DATE_TIME.fullmatch(stripped)
    if date_time is not None:
        return _parse_date_time(date_time, text, default_zone)

    epoch = _DURATION_PART.fullmatch(stripped)
    if epoch is not None:
        number, unit = epoch.groups()
        if unit not in EPOCH_UNITS:
            raise ValueError(
                f"invalid time {text!r}: epoch numbers take the unit s, ms, us "
                f"or ns; for a time {number}{unit} ago write -{number}{unit}"
            )
        return _scaled(number, DURATION_UNITS[unit])

    if _BARE_NUMBER.fullmatch(stripped):
        raise ValueError(
            f"invalid time {text!r}: a number needs a unit, such as "
            f"{stripped}s for seconds or {stripped}ms for milliseconds since "
            "the Unix epoch"
        )
    raise ValueError(f"invalid time {text!r}: expected {TIME_FORMS}")


def format_time(ns: int, fixed_width: bool = False) -> str:
    """Format ns since the Unix epoch as RFC 3339 in UTC.

    The fraction has up to 9 digits without trailing zeros and is left out
    when zero, as in `2026-12-04T17:05:00.59018Z`. With `fixed_width` it
    always has 9 digits, as in `2026-12-04T17:05:00.590180000Z`, so that
    the times of a table column line up.
    """
    seconds, nanos = divmod(ns, NANOS_PER_SECOND)
    moment = _EPOCH + timedelta(seconds=seconds)
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    if fixed_width:
        text += f".{nanos:09d}"
    elif nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return text + "Z"


def format_seconds(ns: int) -> str:
    """Format a duration in nanoseconds as exact decimal seconds.

    The fraction has up to 9 digits without trailing zeros, as in the JSON
    form of `google.protobuf.Duration`: `0.000000001s`, `1.5s`,
    `1000000000000s`, `-2s`.
    """
    sign = "-" if ns < 0 else ""
    seconds, nanos = divmod(abs(ns), NANOS_PER_SECOND)
    if not nanos:
        return f"{sign}{seconds}s"
    return f"{sign}{seconds}." + f"{nanos:09d}".rstrip("0") + "s"
