"""The record of the settings that decide which shard stores each entry.

The router writes `<data_dir>/log_service/sharding.json` at its first start
and checks it at every later start. The record is a history of placements,
each in effect for the entry timestamps from its start on. An entry goes to
the shard that the placement in effect at its own timestamp gives it, so a
resent or late entry with an old timestamp goes where its first copy went.

A start with added shards records a new placement, in effect from a time
after every timestamp that the router accepted so far (`effective_from`).
Stored entries stay where they are. Before the router sends the first entry
with a timestamp at or after a placement's start, it notes in the record that
the placement received entries (`PlacementRecord`). A start without the
shards of a placement that received none drops that placement. A start with
another `log_sharding`, another time bucket width or without a shard that
stores entries is rejected with both values and the fix, because queries
would then miss stored entries.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from log_service.coordinator import STATE_FILE_NAME
from log_service.sharding import (
    VIRTUAL_NODES_PER_SHARD,
    ServiceRing,
    Sharder,
    ShardingHistory,
    TimeBuckets,
)
from log_service.timefmt import format_time
from log_service.topology import Topology
from splitlog.logs.v1 import logs_service_pb2
from splitlog_runtime.config import Config, SettingsError
from splitlog_runtime.private_files import write_file_atomically

_LOGGER = logging.getLogger(__name__)

PLACEMENT_FILE_NAME = "sharding.json"
NANOS_PER_SECOND = 1_000_000_000
# Seconds that a new placement starts beyond log_max_future_seconds. The margin
# covers a router clock that was set back a little between two starts.
CLOCK_MARGIN_SECONDS = 60
# JSON key under which the record stores `PlacementHistory.max_future_ns`, in
# seconds.
MAX_FUTURE_KEY = "largest_log_max_future_seconds"
# JSON key of a placement after the first that stores
# `PlacementHistory.received_entries`.
RECEIVED_KEY = "received_entries"
_STRATEGIES = {
    "service": logs_service_pb2.SHARDING_STRATEGY_SERVICE,
    "time": logs_service_pb2.SHARDING_STRATEGY_TIME,
}


@dataclass(frozen=True)
class Placement:
    """The settings that decide an entry's shard.

    Attributes:
      strategy: `service` or `time`, as `log_sharding` names it.
      shards: the shard ids in the order of the topology.
      time_bucket_seconds: the bucket width of `time`; None for `service`.
      virtual_nodes: ring points per shard of `service`; None for `time`.
    """

    strategy: str
    shards: tuple[str, ...]
    time_bucket_seconds: int | None = None
    virtual_nodes: int | None = None

    @classmethod
    def from_config(cls, config: Config, topology: Topology) -> Placement:
        strategy = config.log_sharding.strip().lower()
        if strategy == "time":
            return cls(
                strategy,
                tuple(topology.shard_ids),
                time_bucket_seconds=int(config.log_time_bucket_seconds),
            )
        return cls(
            strategy, tuple(topology.shard_ids), virtual_nodes=VIRTUAL_NODES_PER_SHARD
        )

    def sharder(self) -> Sharder:
        """Build the sharder that places entries as this placement does."""
        if self.strategy == "time":
            return TimeBuckets(self.shards, self.bucket_ns)
        return ServiceRing(self.shards, self.virtual_nodes or VIRTUAL_NODES_PER_SHARD)

    @property
    def bucket_ns(self) -> int:
        """The time bucket width in nanoseconds, 0 for `service`."""
        return int(self.time_bucket_seconds or 0) * NANOS_PER_SECOND

    def to_json(self) -> dict[str, object]:
        return {
            "version": 1,
            "log_sharding": self.strategy,
            "shards": list(self.shards),
            "log_time_bucket_seconds": self.time_bucket_seconds,
            "virtual_nodes_per_shard": self.virtual_nodes,
        }

    @classmethod
    def from_json(cls, payload: dict) -> Placement:
        bucket = payload.get("log_time_bucket_seconds")
        virtual_nodes = payload.get("virtual_nodes_per_shard")
        return cls(
            str(payload["log_sharding"]),
            tuple(str(shard) for shard in payload["shards"]),
            None if bucket is None else int(bucket),
            None if virtual_nodes is None else int(virtual_nodes),
        )

    def to_proto(self, start_ns: int | None) -> logs_service_pb2.ShardPlacement:
        """Return the placement as GetClusterStatus sends it.

        `start_ns` is the Unix nanoseconds from which the placement is in
        effect, or None for the first placement of a history.
        """
        message = logs_service_pb2.ShardPlacement(
            strategy=_STRATEGIES.get(
                self.strategy, logs_service_pb2.SHARDING_STRATEGY_UNSPECIFIED
            ),
            shards=self.shards,
        )
        if self.time_bucket_seconds is not None:
            message.time_bucket_width.FromSeconds(self.time_bucket_seconds)
        if start_ns is not None:
            message.start_time.FromNanoseconds(start_ns)
        return message

    def describe(self) -> str:
        """Render the placement as the settings that give it."""
        text = f"log_sharding={self.strategy}"
        if self.time_bucket_seconds is not None:
            text += f", log_time_bucket_seconds={self.time_bucket_seconds}"
        return text + f", shards {', '.join(self.shards)}"

    def differences(self, configured: Placement) -> list[str]:
        """Describe each setting in which `configured` places entries elsewhere.

        Returns an empty list when `configured` places every entry as this
        placement does.
        """
        if configured.strategy != self.strategy:
            return self.fixed_differences(configured)
        found = []
        # The ring hashes shard ids, so only time buckets depend on the order.
        same_shards = (
            configured.shards == self.shards
            if self.strategy == "time"
            else sorted(configured.shards) == sorted(self.shards)
        )
        if not same_shards:
            found.append(
                f"the shards (log_shards or log_nodes) are "
                f"{', '.join(configured.shards)}, but the stored entries were "
                f"placed on {', '.join(self.shards)}"
            )
        return found + self.fixed_differences(configured)

    def fixed_differences(self, configured: Placement) -> list[str]:
        """Describe each difference that a new placement cannot absorb.

        Only added shards start a new placement, so the strategy, the bucket
        width and the ring size stay as the first start recorded them.
        """
        if configured.strategy != self.strategy:
            return [
                f"log_sharding is {configured.strategy!r}, but the stored "
                f"entries were placed with {self.strategy!r}"
            ]
        found = []
        if configured.time_bucket_seconds != self.time_bucket_seconds:
            found.append(
                f"log_time_bucket_seconds is {configured.time_bucket_seconds}, "
                f"but the stored entries were placed with "
                f"{self.time_bucket_seconds}"
            )
        if configured.virtual_nodes != self.virtual_nodes:
            found.append(
                f"the ring has {configured.virtual_nodes} virtual nodes per "
                f"shard, but the stored entries were placed with "
                f"{self.virtual_nodes}"
            )
        return found


@dataclass(frozen=True)
class PlacementHistory:
    """The placements of a router's stored entries, oldest first.

    Attributes:
      placements: at least one placement.
      starts: the Unix nanoseconds from which each placement after the first
        is in effect, increasing. The first placement covers every timestamp
        before `starts[0]`, however old.
      max_future_ns: the largest `log_max_future_seconds` of the router's
        starts, in nanoseconds, or 0 in a record of an earlier version.
        Stored entries are at most that far ahead of the router's clock at
        their write, even after the setting was lowered.
      received_entries: for each placement after the first, True once the
        router sent an entry with a timestamp at or after its start, False
        while it sent none, and None when a router version that kept no such
        note wrote the record. Empty when `starts` is.
    """

    placements: tuple[Placement, ...]
    starts: tuple[int, ...] = ()
    max_future_ns: int = 0
    received_entries: tuple[bool | None, ...] = ()

    def __post_init__(self) -> None:
        if len(self.received_entries) != len(self.starts):
            raise ValueError(
                f"{len(self.starts)} placement starts need as many "
                f"received_entries notes, got {len(self.received_entries)}"
            )

    @property
    def latest(self) -> Placement:
        return self.placements[-1]

    @property
    def shards(self) -> set[str]:
        """Every shard that a placement of the history puts entries on."""
        return {shard for placement in self.placements for shard in placement.shards}

    def with_latest(self, placement: Placement) -> PlacementHistory:
        """Return the history with its latest placement replaced by `placement`."""
        return replace(self, placements=(*self.placements[:-1], placement))

    def sharder(self, order: list[str]) -> Sharder:
        """Build the sharder of the history.

        `order` lists every shard id, in the order that queries list them.
        """
        if len(self.placements) == 1:
            return self.latest.sharder()
        return ShardingHistory(
            [placement.sharder() for placement in self.placements],
            self.starts,
            order,
        )

    def to_json(self) -> dict[str, object]:
        """Return the record as JSON data.

        A history of one placement uses the version 1 format, which earlier
        router versions can read. Those versions reject a version 2 record as
        unreadable, so they never place new entries by the first placement
        alone.
        """
        max_future_seconds = self.max_future_ns // NANOS_PER_SECOND
        if len(self.placements) == 1:
            return {
                **self.latest.to_json(),
                MAX_FUTURE_KEY: max_future_seconds,
            }
        items = []
        for index, placement in enumerate(self.placements):
            item = placement.to_json()
            del item["version"]
            if index:
                start = self.starts[index - 1]
                item["effective_from_ns"] = start
                item["effective_from"] = format_time(start)
                received = self.received_entries[index - 1]
                if received is not None:
                    item[RECEIVED_KEY] = received
            items.append(item)
        return {
            "version": 2,
            "placements": items,
            MAX_FUTURE_KEY: max_future_seconds,
        }

    @classmethod
    def from_json(cls, payload: dict) -> PlacementHistory:
        """Parse a record of version 1 or 2.

        Raises:
          ValueError, KeyError, TypeError: the payload is not such a record.
        """
        version = payload.get("version", 1)
        max_future_ns = int(payload.get(MAX_FUTURE_KEY, 0)) * NANOS_PER_SECOND
        if version == 1:
            return cls((Placement.from_json(payload),), (), max_future_ns)
        if version != 2:
            raise ValueError(f"unknown record version {version!r}")
        items = payload["placements"]
        if not isinstance(items, list) or not items:
            raise ValueError("the record lists no placement")
        placements = tuple(Placement.from_json(item) for item in items)
        starts = tuple(int(item["effective_from_ns"]) for item in items[1:])
        if any(later <= earlier for earlier, later in itertools.pairwise(starts)):
            raise ValueError("the placements' effective_from_ns do not increase")
        received = tuple(item.get(RECEIVED_KEY) for item in items[1:])
        if any(value not in (True, False, None) for value in received):
            raise ValueError(f"{RECEIVED_KEY} must be true or false, got {received}")
        return cls(placements, starts, max_future_ns, received)

    def with_received_up_to(self, timestamp_ns: int) -> PlacementHistory:
        """Note every placement that starts at or before `timestamp_ns` as received."""
        received = tuple(
            True if start <= timestamp_ns else value
            for start, value in zip(self.starts, self.received_entries, strict=True)
        )
        return replace(self, received_entries=received)

    def first_unreceived_start(self) -> int | None:
        """Return the earliest start of a placement not noted as received, or None."""
        return next(
            (
                start
                for start, value in zip(self.starts, self.received_entries, strict=True)
                if value is not True
            ),
            None,
        )

    def to_proto(self) -> list[logs_service_pb2.ShardPlacement]:
        """Return the placements, oldest first, as GetClusterStatus sends them."""
        starts = (None, *self.starts)
        return [
            placement.to_proto(start)
            for placement, start in zip(self.placements, starts, strict=True)
        ]

    def describe(self) -> str:
        """Render each placement with the time from which it is in effect."""
        parts = [f"({self.placements[0].describe()})"]
        for start, placement in zip(self.starts, self.placements[1:], strict=True):
            parts.append(f"from {format_time(start)} ({placement.describe()})")
        return ", then ".join(parts)


def earliest_start(now_ns: int, max_future_ns: int) -> int:
    """Return the earliest timestamp that no stored entry can have.

    The router rejects entries more than `max_future_ns` ahead of its clock,
    so no stored entry, and no resend of one, has a timestamp at or after
    `now_ns + max_future_ns`. `CLOCK_MARGIN_SECONDS` on top covers a clock
    set back between two starts.
    """
    return now_ns + max_future_ns + CLOCK_MARGIN_SECONDS * NANOS_PER_SECOND


def effective_from(now_ns: int, max_future_ns: int, placement: Placement) -> int:
    """Return the time from which a new placement is in effect.

    The start is `earliest_start` rounded up. With time sharding it is rounded
    to the next bucket boundary, so that no bucket is split between two
    placements. Otherwise it is rounded to the next second.
    """
    step = placement.bucket_ns or NANOS_PER_SECOND
    return -(-earliest_start(now_ns, max_future_ns) // step) * step


def check_placement(
    router_dir: Path, configured: Placement, now_ns: int, max_future_ns: int
) -> PlacementHistory:
    """Check the configured placement against the recorded history, or record it.

    Without a record (at a first start, or after a router version that kept
    none), the configured placement is recorded. When the configured shards
    extend those of the latest placement, a new placement is recorded, in
    effect from `effective_from`. When they differ from the latest, the
    recorded placements that contain no entry are dropped first
    (`_drop_unreceived`), so an operator can undo a change, or change it
    again, until entries reach the new placement.

    Args:
      now_ns: the router's clock.
      max_future_ns: the configured log_max_future_seconds, in nanoseconds.

    Returns:
      The history, whose latest placement is `configured`.

    Raises:
      SettingsError: the record cannot be read, or the configured placement
        changes the strategy, the bucket width or the ring size, or lacks a
        shard of a placement that may contain entries. The message names both
        values and the fix.
    """
    path = router_dir / PLACEMENT_FILE_NAME
    history = _read(path, configured)
    if history is None:
        history = PlacementHistory((configured,), (), max_future_ns, ())
        _record(path, history)
        return history
    # A router that ran with a larger limit may have stored entries that far
    # ahead of its clock.
    max_future_ns = max(max_future_ns, history.max_future_ns)
    if not history.latest.differences(configured):
        if max_future_ns > history.max_future_ns:
            _record(path, replace(history, max_future_ns=max_future_ns))
        return replace(history, max_future_ns=max_future_ns).with_latest(configured)
    fixed = history.latest.fixed_differences(configured)
    if fixed:
        raise SettingsError(
            "; ".join(fixed)
            + ". New entries would go to other shards than the stored ones, and "
            "queries that pick shards by service or time would miss the stored "
            "entries. Only shards can be added to a cluster that stores "
            "entries. Start with the recorded settings "
            f"({history.latest.describe()}), or, to use the new ones, start the "
            "router and the log nodes on empty data directories, which leaves the "
            f"stored entries behind. The record is {path}"
        )
    active = _drop_unreceived(history, now_ns + max_future_ns)
    missing = active.shards - set(configured.shards)
    if missing:
        raise SettingsError(
            _removed_shards_message(active, configured, missing, now_ns, path)
        )
    active = replace(active, max_future_ns=max_future_ns)
    if not active.latest.differences(configured):
        updated = active.with_latest(configured)
    else:
        start = effective_from(now_ns, max_future_ns, configured)
        updated = PlacementHistory(
            (*active.placements, configured),
            (*active.starts, start),
            max_future_ns,
            (*active.received_entries, False),
        )
        _LOGGER.warning(
            "log placement: new placement (%s) in effect for entries with "
            "timestamps from %s on; entries with earlier timestamps stay on "
            "the shards of the earlier placements (%s)",
            configured.describe(),
            format_time(start),
            active.describe(),
        )
    _record(path, updated)
    return updated


def _read(path: Path, configured: Placement) -> PlacementHistory | None:
    """Read the record, or return None when there is none.

    Raises:
      SettingsError: the record cannot be read or parsed.
    """
    try:
        return _load(path)
    except FileNotFoundError:
        if (path.parent / STATE_FILE_NAME).exists():
            # A router of a version that kept no record ran on this folder.
            _LOGGER.warning(
                "log placement: %s is missing, so the placement of the stored "
                "entries is unknown; recording the configured one (%s)",
                path,
                configured.describe(),
            )
        return None


def _load(path: Path) -> PlacementHistory:
    """Read the record.

    Raises:
      FileNotFoundError: there is no record.
      SettingsError: the record cannot be read or parsed.
    """
    try:
        return PlacementHistory.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SettingsError(
            f"cannot read the recorded log placement in {path} ({exc!r}); "
            "restore the file from a backup, or write it again by deleting it "
            "and starting with the settings the stored entries were placed with"
        ) from None


def _drop_unreceived(history: PlacementHistory, latest_ns: int) -> PlacementHistory:
    """Remove the latest placements as long as each contains no entry.

    A placement contains no entry when the record notes that it received none.
    In a record of an earlier version, which has no such note, it contains none
    when it starts after `latest_ns`, the latest timestamp that the router
    accepts now. A new placement starts at least `CLOCK_MARGIN_SECONDS` after
    that.
    """
    count = len(history.placements)
    while count > 1 and not _may_contain_entries(history, count - 1, latest_ns):
        count -= 1
    if count == len(history.placements):
        return history
    for start, placement in zip(
        history.starts[count - 1 :], history.placements[count:], strict=True
    ):
        _LOGGER.warning(
            "log placement: dropping the placement (%s) recorded for entries "
            "from %s on, which has placed no entry yet",
            placement.describe(),
            format_time(start),
        )
    return replace(
        history,
        placements=history.placements[:count],
        starts=history.starts[: count - 1],
        received_entries=history.received_entries[: count - 1],
    )


def _may_contain_entries(history: PlacementHistory, index: int, latest_ns: int) -> bool:
    """Return whether placement `index` (1 or more) may contain entries."""
    received = history.received_entries[index - 1]
    if received is None:
        return history.starts[index - 1] <= latest_ns
    return received


def _removed_shards_message(
    history: PlacementHistory,
    configured: Placement,
    missing: set[str],
    now_ns: int,
    path: Path,
) -> str:
    """Explain why a start without the `missing` shards would lose entries."""
    sentences = [
        f"the shards (log_shards or log_nodes) are {', '.join(configured.shards)}, "
        f"but the recorded placements put entries on {', '.join(sorted(missing))} "
        "as well."
    ]
    unexplained = set(missing)
    for index, placement in enumerate(history.placements):
        lost = sorted(unexplained & set(placement.shards))
        if lost:
            unexplained -= set(lost)
            sentences.append(_placement_sentence(history, index, lost, now_ns))
    sentences.append(
        "A shard can be added but not removed, because queries would no longer "
        "read the entries it stores. A start without a placement's shards drops "
        "the placement only while it has received no entry. Start with every "
        f"recorded shard ({', '.join(sorted(history.shards))}) and optionally "
        f"new ones. The recorded placements are {history.describe()}. The record "
        f"is {path}"
    )
    return " ".join(sentences)


def _placement_sentence(
    history: PlacementHistory, index: int, shards: list[str], now_ns: int
) -> str:
    """Say why placement `index` may contain entries on `shards`."""
    placement = history.placements[index]
    if index == 0:
        return (
            f"Stored entries were placed on {', '.join(shards)} by the first "
            f"placement ({placement.describe()})."
        )
    start = history.starts[index - 1]
    subject = f"The placement that added {', '.join(shards)} ({placement.describe()})"
    if start <= now_ns:
        state = f"{subject} is in effect since {format_time(start)}"
        if history.received_entries[index - 1]:
            return f"{state}, and it received entries."
        return (
            f"{state}, and it may contain entries, because a router version that "
            "noted no received entries wrote the record."
        )
    seconds = -(-(start - now_ns) // NANOS_PER_SECOND)
    state = f"{subject} is pending until {format_time(start)} (in {seconds}s)"
    if history.received_entries[index - 1]:
        return (
            f"{state}, but it already received entries, because the router "
            "accepts timestamps up to log_max_future_seconds ahead of its clock."
        )
    return (
        f"{state}, but it may already contain entries, because the router accepted "
        f"timestamps up to {history.max_future_ns // NANOS_PER_SECOND}s "
        "(log_max_future_seconds) ahead of its clock, and a router version that "
        "noted no received entries wrote the record."
    )


class PlacementRecord:
    """The placement record of a running router, which notes received entries.

    The router calls `note_timestamp` before it sends entries to the shards.
    Before the first entry with a timestamp at or after a placement's start,
    the record notes that the placement received entries. Only a placement
    without that note is dropped at a later start without its shards, so no
    stored entry falls out of the placements.

    Attributes:
      unreceived_from_ns: the earliest start of a placement that has no such
        note yet, or None. A timestamp before it needs no note.
    """

    def __init__(self, path: Path, history: PlacementHistory) -> None:
        self._path = path
        self._lock = threading.Lock()
        self.unreceived_from_ns = history.first_unreceived_start()

    def note_timestamp(self, timestamp_ns: int) -> None:
        """Note each placement that starts at or before `timestamp_ns` as received.

        Writes the record only when that adds a note.

        Raises:
          OSError: the record cannot be written, or is gone.
          SettingsError: the record cannot be parsed.
        """
        start = self.unreceived_from_ns
        if start is None or timestamp_ns < start:
            return
        with self._lock:
            recorded = _load(self._path)
            noted = recorded.with_received_up_to(timestamp_ns)
            if noted != recorded:
                _record(self._path, noted)
                _LOGGER.info(
                    "log placement: an entry at %s reaches the placements that "
                    "start at or before it, so they are noted as received and a "
                    "start without their shards now fails",
                    format_time(timestamp_ns),
                )
            self.unreceived_from_ns = noted.first_unreceived_start()


def _record(path: Path, history: PlacementHistory) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(history.to_json(), indent=1, sort_keys=True)
    write_file_atomically(path, text.encode("utf-8"))
    _LOGGER.info("log placement recorded in %s: %s", path, history.describe())
