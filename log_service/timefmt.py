"""Parsing and formatting of log times at full nanosecond precision.

CLI flags and REST helpers take times as text. `datetime` holds only
microseconds, so this module parses the fraction of a second itself and does
all arithmetic on integer nanoseconds since the Unix epoch.

Accepted time forms (`parse_time`):
- RFC 3339 with `Z` or an offset: `2026-12-04T17:05:00.590180708Z`,
  `2026-12-04T22:35:00+05:30`. A space may replace the `T`. The fraction of
  a second has 1 to 9 digits. An offset's hours are 00 to 23 and its minutes
  00 to 59, the range of RFC 3339's `time-offset` (-23:59 to +23:59).
- the same without a zone, or a date alone (`2026-12-04`, meaning midnight).
  These are read in the default zone, an IANA name such as
  `America/New_York`, and never in the server's local zone.
- an epoch number with a unit: `1700000000s`, `1700000000123ms`,
  `1700000000123456us`, `1700000000123456789ns`. A bare number is rejected
  because its unit would be a guess.
- `now`, `now-15m`, `now+1h`, or `-1h` for one hour ago.

`parse_rfc3339` takes only the first form, with its zone and a `T`, as the
REST gateway reads a `google.protobuf.Timestamp`.

Durations (`parse_duration`) are one or more numbers with a unit, such as
`90s`, `1h30m`, `1.5h` or `500ms`. Units: `ns`, `us` (or `µs`), `ms`, `s`,
`m`, `h`, `d` (24 hours). A number that is not a whole number of nanoseconds,
such as `1.0000000001s`, is rejected rather than cut.
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
_DATE = r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
# An empty fraction is matched, so that its error names what is missing.
_TIME = (
    r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
    r"(?:\.(?P<fraction>[0-9]*))?"
)
_ZONE = r"(?P<zone>[Zz]|[+-][0-9]{2}:[0-9]{2})"
_DATE_TIME = re.compile(rf"{_DATE}(?:[Tt ]{_TIME}{_ZONE}?)?")
_RFC3339 = re.compile(rf"{_DATE}[Tt]{_TIME}{_ZONE}")
_OFFSET = re.compile(r"([+-])([0-9]{2}):?([0-9]{2})")

TIME_FORMS = (
    "RFC 3339 such as 2026-12-04T17:05:00.590180708Z or "
    "2026-12-04T22:35:00+05:30, a date-time without offset in the default "
    "zone, an epoch number with a unit such as 1700000000s or "
    "1700000000123ms, now, now-15m or -1h"
)
RFC3339_FORM = (
    "an RFC 3339 time such as 2026-12-04T17:05:00.590180708Z or "
    "2026-12-04T22:35:00+05:30, with 1 to 9 fraction digits if any, and Z or "
    "an offset from -23:59 to +23:59"
)
DURATION_FORMS = (
    "a number with a unit ns, us, ms, s, m, h or d, such as 90s, 15m, 1h30m, "
    "7d or 500ms"
)


class TimeFormatError(ValueError):
    """A time or duration text that does not parse.

    Attributes:
      detail: the cause without the text, such as "offset +25:00 is out of
        range, because ...".
    """

    def __init__(self, kind: str, text: str, detail: str) -> None:
        super().__init__(f"invalid {kind} {text!r}: {detail}")
        self.detail = detail


def _scaled(number: str, unit: str, kind: str, text: str) -> int:
    """Return a decimal number text of a unit in nanoseconds, exactly.

    Raises:
      TimeFormatError: the product is not a whole number of nanoseconds.
    """
    unit_ns = DURATION_UNITS[unit]
    whole, _, fraction = number.partition(".")
    value = int(whole or "0") * unit_ns
    if fraction:
        scaled, below_nanosecond = divmod(int(fraction) * unit_ns, 10 ** len(fraction))
        if below_nanosecond:
            raise TimeFormatError(
                kind,
                text,
                f"{number}{unit} is not a whole number of "
                "nanoseconds; nanoseconds are the finest unit",
            )
        value += scaled
    return value


def parse_duration(text: str) -> int:
    """Parse a duration such as `15m` or `1h30m` into nanoseconds.

    Raises:
      ValueError: the text is not a duration; the message names the input
        and the accepted forms.
    """
    compact = text.strip()
    if not _DURATION.fullmatch(compact):
        raise TimeFormatError("duration", text, f"expected {DURATION_FORMS}")
    return sum(
        _scaled(number, unit, "duration", text)
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


def utc_offset(text: str) -> timezone:
    """Return the zone of a UTC offset such as `+05:30`, `-0800` or `-00:00`.

    Raises:
      ValueError: the text is not an offset, or its hours are above 23 or its
        minutes above 59. RFC 3339 and ISO 8601 allow neither, and read as a
        duration, `+25:00` or `-00:61` would give a wrong instant.
    """
    match = _OFFSET.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid UTC offset {text!r}: expected one such as +05:30")
    sign, hours, minutes = match[1], int(match[2]), int(match[3])
    if hours > 23 or minutes > 59:
        raise ValueError(
            f"offset {text} is out of range, because an offset's hours must be "
            "00 to 23 and its minutes 00 to 59 (-23:59 to +23:59)"
        )
    offset = timedelta(hours=hours, minutes=minutes)
    return timezone(-offset if sign == "-" else offset)


def _parse_date_time(match: re.Match[str], text: str, default_zone: str) -> int:
    fraction = match["fraction"]
    if fraction == "":
        raise TimeFormatError(
            "time",
            text,
            "the '.' has no digits after it; write 1 to 9 digits of the "
            "fraction of a second, or leave out the '.'",
        )
    fraction = fraction or ""
    if len(fraction) > 9:
        raise TimeFormatError(
            "time",
            text,
            "the fraction of a second has more than 9 digits; nanoseconds are "
            "the finest unit",
        )
    zone_text = match["zone"]
    if zone_text is None:
        zone = _zone(default_zone)
    elif zone_text in ("Z", "z"):
        zone = UTC
    else:
        try:
            zone = utc_offset(zone_text)
        except ValueError as exc:
            raise TimeFormatError("time", text, str(exc)) from None
    if match["second"] == "60":
        raise TimeFormatError(
            "time",
            text,
            "second 60 is a leap second, which a Unix time cannot hold; write "
            "59 or second 00 of the next minute",
        )
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
        raise TimeFormatError("time", text, str(exc)) from None
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
            except TimeFormatError as error:
                if _DURATION.fullmatch(duration_text):
                    # A duration's form with a value that it cannot take.
                    raise TimeFormatError("time", text, error.detail) from None
            else:
                return current - duration if sign == "-" else current + duration
        raise TimeFormatError("time", text, f"expected {TIME_FORMS}")

    date_time = _DATE_TIME.fullmatch(stripped)
    if date_time is not None:
        return _parse_date_time(date_time, text, default_zone)

    epoch = _DURATION_PART.fullmatch(stripped)
    if epoch is not None:
        number, unit = epoch.groups()
        if unit not in EPOCH_UNITS:
            raise TimeFormatError(
                "time",
                text,
                f"epoch numbers take the unit s, ms, us or ns; for a time "
                f"{number}{unit} ago write -{number}{unit}",
            )
        return _scaled(number, unit, "time", text)

    if _BARE_NUMBER.fullmatch(stripped):
        raise TimeFormatError(
            "time",
            text,
            f"a number needs a unit, such as {stripped}s for seconds or "
            f"{stripped}ms for milliseconds since the Unix epoch",
        )
    raise TimeFormatError("time", text, f"expected {TIME_FORMS}")


def parse_rfc3339(text: str) -> int:
    """Parse an RFC 3339 time with its zone into ns since the Unix epoch.

    Only the form `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)` is
    accepted, with `t` and `z` in lower case too, as RFC 3339 allows. A leap
    second (`:60`) is rejected, as protobuf's Timestamp has none.

    Raises:
      TimeFormatError: the text has another form, or names a date, a time
        or an offset that does not exist. `detail` names the cause.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise TimeFormatError("time", text, f"expected {RFC3339_FORM}")
    return _parse_date_time(match, text, "UTC")


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
