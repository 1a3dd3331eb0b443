"""The retention policy: its durable store, its checks and its enforcement.

The router keeps the one policy of the cluster in
`<data_dir>/log_service/retention.json`. Until it is first updated, it keeps
entries for `log_retention_hours`. Writes use the policy to reject entries
that are already too old, and `RetentionEnforcer` asks every node to delete
expired entries once a minute and right after each update, the same entries
on every replica of a shard. The passes that a follower missed are sent again
as soon as the coordinator's poll reaches it, and kept in
`<data_dir>/log_service/retention_missed.json`, so that a restarted router
still sends them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from google.protobuf import duration_pb2, field_mask_pb2

from log_service.clients import is_closed_channel_error
from log_service.model import Limits, service_is_valid
from log_service.timefmt import format_seconds
from splitlog.logs.v1 import logs_service_pb2, node_service_pb2
from splitlog_runtime.errors import Aborted, NotFound, invalid_field
from splitlog_runtime.private_files import write_file_atomically
from splitlog_runtime.validation import Violations

if TYPE_CHECKING:
    # Only a type here, and the CLI reads this module's constants.
    from log_service.coordinator import ShardReplicas

_LOGGER = logging.getLogger(__name__)

POLICY_NAME = "retentionPolicy"
NANOS_PER_HOUR = 3600 * 1_000_000_000
MIN_RETENTION_NS = NANOS_PER_HOUR
# 100 years: the oldest timestamp that a longer retention would admit may not
# fit the signed 64-bit nanoseconds that the nodes store.
MAX_RETENTION_NS = 100 * 8766 * NANOS_PER_HOUR
ENFORCE_INTERVAL_SECONDS = 60.0
APPLY_DEADLINE_SECONDS = 30.0
# The shortest time between two resends of a node's missed passes. A node
# that responds to the coordinator's polls but keeps failing the passes is then
# not sent them on every poll round.
MISSED_RESEND_SECONDS = 5.0
MISSED_PASSES_FILE_NAME = "retention_missed.json"
# Passes kept for one node that failed them. Passes that a later one covers
# are dropped first, so the list grows mainly when the retention is loosened
# between passes.
MAX_MISSED_PASSES = 100
_MASK_PATHS = ("default_retention", "service_retentions")
# Services with a retention of their own in one policy. The policy is read on
# every write and stored whole in one file.
MAX_SERVICE_RETENTIONS = 10_000
# Ingest's rules for a service name, which no setting changes.
_LIMITS = Limits()


@dataclass(frozen=True)
class Policy:
    """Retention in nanoseconds: the default and the per-service overrides."""

    default_ns: int
    services: dict[str, int] = field(default_factory=dict)
    update_time_ns: int = 0

    @property
    def etag(self) -> str:
        """A digest of the policy in double quotes, an HTTP entity tag as is."""
        encoded = json.dumps(
            [self.default_ns, sorted(self.services.items()), self.update_time_ns]
        ).encode()
        return f'"{hashlib.blake2b(encoded, digest_size=8).hexdigest()}"'

    def cutoffs(self, now_ns: int) -> tuple[int, dict[str, int]]:
        """Return the default and per-service lowest kept timestamps."""
        services = {name: now_ns - ns for name, ns in self.services.items()}
        return now_ns - self.default_ns, services

    def to_proto(self) -> logs_service_pb2.RetentionPolicy:
        message = logs_service_pb2.RetentionPolicy(
            name=POLICY_NAME,
            default_retention=_duration(self.default_ns),
            etag=self.etag,
        )
        for service, ns in sorted(self.services.items()):
            message.service_retentions[service].CopyFrom(_duration(ns))
        if self.update_time_ns:
            message.update_time.FromNanoseconds(self.update_time_ns)
        return message


def _duration(ns: int) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(ns)
    return duration


def _hours(ns: int) -> str:
    return f"{ns / NANOS_PER_HOUR:g} h"


def _check_retention(value: duration_pb2.Duration, path: str) -> int:
    seconds, nanos = value.seconds, value.nanos
    if abs(nanos) >= 1_000_000_000 or seconds * nanos < 0:
        raise invalid_field(
            path,
            f"seconds {seconds} with nanos {nanos} is not a valid Duration; "
            "send nanos from -999999999 to 999999999 with the sign of seconds, "
            "and a retention of 3600s or more, such as seconds 86400 and nanos 0",
        )
    ns = value.ToNanoseconds()
    if ns <= 0:
        raise invalid_field(
            path,
            f"{format_seconds(ns)} is {'negative' if ns else 'zero'}; a retention "
            "is a positive duration of at least 1 hour, so send 3600s or more",
        )
    if ns < MIN_RETENTION_NS:
        raise invalid_field(
            path,
            f"{format_seconds(ns)} is shorter than the minimum of 1 hour; send "
            "3600s or more",
        )
    if ns > MAX_RETENTION_NS:
        raise invalid_field(
            path,
            f"{format_seconds(ns)} is longer than the maximum of 100 years; send "
            f"{MAX_RETENTION_NS // 1_000_000_000}s or less",
        )
    return ns


def check_name(name: str, path: str = "name") -> None:
    """Check the resource name of the policy.

    Raises:
      InvalidArgument: the name is empty.
      NotFound: the name is not `retentionPolicy`.
    """
    if not name:
        raise invalid_field(path, f"is required; send {POLICY_NAME!r}")
    if name != POLICY_NAME:
        raise NotFound(
            f"{path}: no retention policy is named {name!r}; the only one is "
            f"{POLICY_NAME!r}",
            metadata={"field": path},
        )


def apply_update(
    current: Policy,
    update: logs_service_pb2.RetentionPolicy,
    mask: field_mask_pb2.FieldMask,
    now_ns: int,
) -> Policy:
    """Return the policy after an update, checked and with a new update time.

    Raises:
      InvalidArgument: a path of the mask or a retention is invalid.
      Aborted: the update carries an etag that is no longer current.
    """
    violations = Violations()
    paths = list(mask.paths)
    for index, path in enumerate(paths):
        if path not in (*_MASK_PATHS, "*"):
            violations.check(
                _raise,
                f"update_mask.paths[{index}]",
                f"{path!r} cannot be updated; use default_retention, "
                "service_retentions or *",
            )
    if not paths:
        paths = [
            path
            for path, present in (
                ("default_retention", update.HasField("default_retention")),
                ("service_retentions", bool(update.service_retentions)),
            )
            if present
        ]
    if "*" in paths:
        paths = list(_MASK_PATHS)
    default_ns = current.default_ns
    services = dict(current.services)
    if "default_retention" in paths:
        prefix = "retention_policy.default_retention"
        if not update.HasField("default_retention"):
            violations.check(_raise, prefix, "is required when the mask names it")
        else:
            default_ns = violations.check(
                _check_retention, update.default_retention, prefix
            )
    if "service_retentions" in paths:
        services = {}
        if len(update.service_retentions) > MAX_SERVICE_RETENTIONS:
            raise invalid_field(
                "retention_policy.service_retentions",
                f"has {len(update.service_retentions)} services; a policy holds "
                f"at most {MAX_SERVICE_RETENTIONS}, so leave out services that "
                "can keep the default retention",
            )
        for service, value in sorted(update.service_retentions.items()):
            path = f"retention_policy.service_retentions[{service!r}]"
            if not service:
                violations.check(_raise, path, "the service name is empty")
                continue
            if not service_is_valid(service, _LIMITS):
                violations.check(
                    _raise,
                    path,
                    "is not a service name that ingest accepts: at most "
                    f"{_LIMITS.max_service_bytes} bytes in UTF-8 and no control "
                    "characters; use the name the entries carry",
                )
                continue
            services[service] = violations.check(_check_retention, value, path)
    violations.raise_if_any()
    if not paths:
        raise invalid_field(
            "update_mask",
            "names no field and the policy sets none; set default_retention or "
            "service_retentions",
        )
    # Versions before the quotes sent the bare digest, which still matches.
    if update.etag and update.etag not in (current.etag, current.etag.strip('"')):
        raise Aborted(
            f"retention_policy.etag {update.etag!r} is not the current etag "
            f"{current.etag!r}; the policy changed meanwhile, so read it again "
            "and resend the update",
            reason="ETAG_MISMATCH",
            metadata={"field": "retention_policy.etag"},
        )
    return Policy(default_ns, services, now_ns)


def _raise(path: str, description: str) -> None:
    raise invalid_field(path, description)


class RetentionStore:
    """The policy in a JSON file, replaced atomically on each update."""

    def __init__(self, path: Path, default_hours: int) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._policy = self._load() or Policy(default_hours * NANOS_PER_HOUR)
        self._listeners: list[Callable[[], None]] = []

    def _load(self) -> Policy | None:
        try:
            payload = json.loads(self._path.read_text())
        except FileNotFoundError:
            return None
        return Policy(
            int(payload["default_ns"]),
            {str(k): int(v) for k, v in payload["services"].items()},
            int(payload.get("update_time_ns", 0)),
        )

    @property
    def policy(self) -> Policy:
        return self._policy

    def on_update(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def cutoff_function(self, now_ns: int) -> Callable[[str], int]:
        """Return the lowest allowed timestamp per service at `now_ns`."""
        default_cutoff, cutoffs = self._policy.cutoffs(now_ns)
        return lambda service: cutoffs.get(service, default_cutoff)

    def update(
        self,
        update: logs_service_pb2.RetentionPolicy,
        mask: field_mask_pb2.FieldMask,
    ) -> Policy:
        """Check, apply and save an update, then tell the listeners.

        An update that leaves every retention as it is returns the current
        policy with its update time and etag. It saves nothing and calls no
        listener, so it starts no retention pass. Its name, mask, values and
        etag are checked as for any other update.

        Raises:
          InvalidArgument, NotFound, Aborted: as `check_name` and
            `apply_update` describe.
        """
        check_name(update.name, "retention_policy.name")
        with self._lock:
            current = self._policy
            policy = apply_update(current, update, mask, time.time_ns())
            if (
                policy.default_ns == current.default_ns
                and policy.services == current.services
            ):
                _LOGGER.debug("log retention update changes no retention")
                return current
            self._save(policy)
            self._policy = policy
        _LOGGER.info(
            "log retention changed: default %s, per service %s",
            _hours(policy.default_ns),
            {name: _hours(ns) for name, ns in policy.services.items()},
        )
        for listener in self._listeners:
            listener()
        return policy

    def _save(self, policy: Policy) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(
            {
                "default_ns": policy.default_ns,
                "services": policy.services,
                "update_time_ns": policy.update_time_ns,
            }
        )
        write_file_atomically(self._path, text.encode("utf-8"))


class RetentionEnforcer:
    """Applies the policy to every shard each minute and after each update.

    A pass goes to the shard's leader first. The leader deletes the expired
    entries up to its commit sequence and returns that sequence. The
    followers then receive the same cutoffs with that sequence as
    `max_sequence`, so every replica deletes the same entries, whichever
    records its applier has reached. A follower that fails a pass receives
    it again before its next pass, and as soon as `nodes_polled` reports it
    reachable. So a policy loosened in between does not leave it with
    entries that the other replicas deleted, and a follower that returns
    soon after a pass does not serve the deleted entries until the next
    round. A shard whose leader is missing or fails is skipped in that
    round, on every replica.

    The missed passes are saved in `missed_path` at each change and loaded
    at start, so a router that restarts before the follower returns still
    sends them.

    Args:
      store: the policy.
      shards: returns the addresses of each shard's leader and followers.
      stub_for: returns the LogNodeService stub of an address.
      interval: seconds between passes without an update.
      missed_path: the file of the missed passes; None keeps them in memory
        only.
    """

    def __init__(
        self,
        store: RetentionStore,
        shards: Callable[[], list[ShardReplicas]],
        stub_for: Callable[[str], object],
        interval: float = ENFORCE_INTERVAL_SECONDS,
        missed_path: Path | None = None,
    ) -> None:
        self._store = store
        self._shards = shards
        self._stub_for = stub_for
        self._interval = interval
        self._missed_file = None if missed_path is None else MissedPasses(missed_path)
        # Passes that a node failed, by its address, oldest first.
        self._missed: dict[str, list[node_service_pb2.ApplyRetentionRequest]] = (
            {} if self._missed_file is None else self._missed_file.load()
        )
        # The addresses that have missed passes, replaced whole after each
        # change, so that the poller thread can read it without a lock.
        self._waiting: frozenset[str] = frozenset(self._missed)
        # Addresses that the coordinator reached while they had missed
        # passes; the enforcer thread resends those passes.
        self._returned: set[str] = set()
        self._returned_lock = threading.Lock()
        # Monotonic time of the latest send of each address's missed passes.
        self._resent_at: dict[str, float] = {}
        self._pass_due = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="log-retention", daemon=True
        )
        store.on_update(self._request_pass)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def _request_pass(self) -> None:
        self._pass_due.set()
        self._wake.set()

    def nodes_polled(self, reachable: Collection[str]) -> None:
        """Note the node addresses that answered a poll round.

        Called on the coordinator's thread. Wakes the enforcer thread to
        resend the missed passes of those addresses.
        """
        returned = self._waiting.intersection(reachable)
        if not returned:
            return
        with self._returned_lock:
            self._returned |= returned
        self._wake.set()

    def _run(self) -> None:
        next_pass = time.monotonic() + self._interval
        while not self._stop.is_set():
            self._wake.wait(max(0.0, next_pass - time.monotonic()))
            self._wake.clear()
            if self._stop.is_set():
                return
            regular = self._pass_due.is_set() or time.monotonic() >= next_pass
            try:
                if regular:
                    self._pass_due.clear()
                    self.apply_once()
                else:
                    self.resend_missed()
            except Exception as exc:
                # A pass that outlasts the join in `stop` meets the closed
                # node channels, which raise ValueError (`ClientsClosed`).
                if self._stop.is_set() and is_closed_channel_error(exc):
                    _LOGGER.info("log retention: stop ended a pass (%s)", exc)
                    return
                # Any other error is a bug. The thread logs it and goes on,
                # so that one failed pass does not end retention for good.
                if regular:
                    _LOGGER.exception(
                        "log retention: a pass failed; the next one starts in %.0fs",
                        self._interval,
                    )
                else:
                    _LOGGER.exception(
                        "log retention: sending missed passes again failed; the "
                        "next regular pass starts in %.0fs",
                        max(0.0, next_pass - time.monotonic()),
                    )
            # A failed resend of missed passes leaves the regular schedule.
            if regular:
                next_pass = time.monotonic() + self._interval

    def apply_once(self) -> Mapping[str, int]:
        """Apply the policy to every shard; return the deletions per node address.

        A node's count includes the missed passes sent again. A node whose
        first pass of the round failed is missing from the result.
        """
        default_cutoff, cutoffs = self._store.policy.cutoffs(time.time_ns())
        deleted: dict[str, int] = {}
        missed_before = dict(self._missed)
        shards = self._shards()
        self._forget_unknown_nodes(shards)
        for replicas in shards:
            leader = replicas.leader_address
            if leader is None:
                _LOGGER.warning(
                    "log retention skipped shard %s because it has no leader; "
                    "retrying in %.0fs",
                    replicas.shard,
                    self._interval,
                )
                continue
            request = node_service_pb2.ApplyRetentionRequest(
                default_cutoff=default_cutoff, service_cutoffs=cutoffs
            )
            response = self._apply(leader, request, deleted)
            if response is None:
                continue
            bounded = node_service_pb2.ApplyRetentionRequest(
                default_cutoff=default_cutoff,
                service_cutoffs=cutoffs,
                max_sequence=response.max_sequence,
            )
            for address in replicas.follower_addresses:
                self._apply(address, bounded, deleted)
        self._save_missed(missed_before)
        return deleted

    def resend_missed(self) -> Mapping[str, int]:
        """Send their missed passes to the nodes that `nodes_polled` reported.

        Returns the deletions per node address. A node whose passes were
        sent less than MISSED_RESEND_SECONDS ago waits for a later round.
        """
        with self._returned_lock:
            returned, self._returned = self._returned, set()
        deleted: dict[str, int] = {}
        missed_before = dict(self._missed)
        now = time.monotonic()
        for address in sorted(returned):
            passes = self._missed.get(address)
            if not passes:
                continue
            if now - self._resent_at.get(address, -MISSED_RESEND_SECONDS) < (
                MISSED_RESEND_SECONDS
            ):
                continue
            del self._missed[address]
            self._resent_at[address] = now
            _LOGGER.info(
                "log retention: node %s is reachable again; sending its %d "
                "missed passes",
                address,
                len(passes),
            )
            self._send(address, passes, deleted)
        self._save_missed(missed_before)
        return deleted

    def _save_missed(
        self, before: Mapping[str, list[node_service_pb2.ApplyRetentionRequest]]
    ) -> None:
        self._waiting = frozenset(self._missed)
        if self._missed_file is not None and self._missed != before:
            self._missed_file.save(self._missed)

    def _forget_unknown_nodes(self, shards: list[ShardReplicas]) -> None:
        """Drop the missed passes of addresses that no shard lists any more."""
        if not shards:
            return
        known = {
            address
            for replicas in shards
            for address in (replicas.leader_address, *replicas.follower_addresses)
            if address is not None
        }
        for address in sorted(set(self._missed) - known):
            _LOGGER.warning(
                "log retention: forgetting %d missed passes of %s, which is no "
                "longer a node of any shard",
                len(self._missed[address]),
                address,
            )
            del self._missed[address]

    def _apply(
        self,
        address: str,
        request: node_service_pb2.ApplyRetentionRequest,
        deleted: dict[str, int],
    ) -> node_service_pb2.ApplyRetentionResponse | None:
        """Send a node its missed passes, then `request`; return the last response.

        Returns None when a pass failed. The failed pass and those after it
        are kept for the next round, except a pass without `max_sequence`,
        which would cover a different sequence when sent again.
        """
        passes = [*self._missed.pop(address, []), request]
        return self._send(address, passes, deleted)

    def _send(
        self,
        address: str,
        passes: list[node_service_pb2.ApplyRetentionRequest],
        deleted: dict[str, int],
    ) -> node_service_pb2.ApplyRetentionResponse | None:
        """Send `passes` to a node in order; return the last response.

        Returns None when a pass failed, and keeps it and those after it as
        `_apply` describes.
        """
        stub = self._stub_for(address)
        response = None
        for index, item in enumerate(passes):
            try:
                response = stub.ApplyRetention(item, timeout=APPLY_DEADLINE_SECONDS)
            except grpc.RpcError as exc:
                _LOGGER.warning(
                    "log retention on node %s failed (%s: %s); retrying when "
                    "the router's poll reaches it again, or in %.0fs",
                    address,
                    exc.code(),
                    exc.details(),
                    self._interval,
                )
                self._keep_missed(
                    address, [p for p in passes[index:] if p.max_sequence > 0]
                )
                return None
            deleted[address] = deleted.get(address, 0) + response.deleted_count
            if response.deleted_count:
                _LOGGER.info(
                    "log retention on node %s deleted %d entries and %d partitions "
                    "through sequence %d",
                    address,
                    response.deleted_count,
                    response.dropped_partitions,
                    response.max_sequence,
                )
        return response

    def _keep_missed(
        self, address: str, passes: list[node_service_pb2.ApplyRetentionRequest]
    ) -> None:
        """Keep the passes a node failed, without those that a later one covers."""
        kept: list[node_service_pb2.ApplyRetentionRequest] = []
        for index, item in enumerate(passes):
            if not any(_covers(later, item) for later in passes[index + 1 :]):
                kept.append(item)
        if len(kept) > MAX_MISSED_PASSES:
            _LOGGER.warning(
                "log retention: node %s failed %d passes that no later pass "
                "covers; forgetting the oldest %d, so it may keep entries that "
                "the other replicas deleted",
                address,
                len(kept),
                len(kept) - MAX_MISSED_PASSES,
            )
            kept = kept[-MAX_MISSED_PASSES:]
        if kept:
            self._missed[address] = kept


def _covers(
    later: node_service_pb2.ApplyRetentionRequest,
    earlier: node_service_pb2.ApplyRetentionRequest,
) -> bool:
    """Return whether `later` deletes every entry that `earlier` deletes."""
    if later.max_sequence < earlier.max_sequence:
        return False
    if later.default_cutoff < earlier.default_cutoff:
        return False
    services = set(later.service_cutoffs) | set(earlier.service_cutoffs)
    return all(
        later.service_cutoffs.get(service, later.default_cutoff)
        >= earlier.service_cutoffs.get(service, earlier.default_cutoff)
        for service in services
    )


class MissedPasses:
    """The passes that nodes missed, by node address, in one JSON file.

    The file is replaced atomically: written to a temporary file, flushed,
    renamed, and the folder flushed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, list[node_service_pb2.ApplyRetentionRequest]]:
        """Return the saved passes; none when the file is missing or invalid.

        An invalid file is logged and ignored, because the passes only repair
        followers, and the router must start without them.
        """
        try:
            payload = json.loads(self.path.read_text())
            return {
                str(address): [_pass_from_json(item) for item in passes]
                for address, passes in payload["nodes"].items()
            }
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            _LOGGER.error(
                "log retention: cannot read the missed passes in %s (%r); "
                "starting without them, so followers that missed a pass may "
                "keep entries that their leader deleted",
                self.path,
                exc,
            )
            return {}

    def save(
        self, missed: Mapping[str, list[node_service_pb2.ApplyRetentionRequest]]
    ) -> None:
        payload = {
            "version": 1,
            "nodes": {
                address: [_pass_to_json(item) for item in passes]
                for address, passes in sorted(missed.items())
            },
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomically(
            self.path, json.dumps(payload, sort_keys=True).encode("utf-8")
        )


def _pass_to_json(item: node_service_pb2.ApplyRetentionRequest) -> dict[str, object]:
    return {
        "default_cutoff": item.default_cutoff,
        "service_cutoffs": dict(item.service_cutoffs),
        "max_sequence": item.max_sequence,
    }


def _pass_from_json(raw: dict) -> node_service_pb2.ApplyRetentionRequest:
    return node_service_pb2.ApplyRetentionRequest(
        default_cutoff=int(raw["default_cutoff"]),
        service_cutoffs={
            str(service): int(cutoff)
            for service, cutoff in raw["service_cutoffs"].items()
        },
        max_sequence=int(raw["max_sequence"]),
    )
