"""Synthetic log entries shaped like the loghub samples, for the log benchmarks.

Twelve services, each with a few message templates in the style of a real
system log (block ids, task ids, IP addresses, durations), give messages of
about 140 bytes on average. Severities are mostly INFO, with the share of
WARN, ERROR and DEBUG seen in the loghub files. A seeded `random.Random`
makes every run produce the same entries.

About one entry in 30 contains the word `timeout`, which the query benchmark
searches for.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

from google.protobuf.timestamp_pb2 import Timestamp

from splitlog.logs.v1 import logs_service_pb2 as pb

KEYWORD = "timeout"

# (severity, weight) pairs; the weights add up to 1000.
_SEVERITY_WEIGHTS = (
    (pb.SEVERITY_DEBUG, 80),
    (pb.SEVERITY_INFO, 790),
    (pb.SEVERITY_WARN, 90),
    (pb.SEVERITY_ERROR, 35),
    (pb.SEVERITY_FATAL, 5),
)

# Templates per service. `{n}` is a number, `{h}` a hex id, `{ip}` an IPv4
# address, `{ms}` a duration in milliseconds.
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "hdfs-datanode": (
        "Receiving block blk_{n} src: /{ip}:50010 dest: /{ip}:50010 of size "
        "67108864 for pipeline stage {n}",
        "PacketResponder {n} for block blk_{n} terminating after {ms} ms, "
        "bytes acknowledged by downstream mirror",
    ),
    "hdfs-namenode": (
        "BLOCK* NameSystem.allocateBlock: /user/root/rand/_temporary/part-{n}. "
        "blk_{n} on {ip}:50010",
        "BLOCK* ask {ip}:50010 to replicate blk_{n} to datanode(s) {ip}:50010 "
        "after heartbeat check",
    ),
    "hadoop-mapreduce": (
        "Progress of TaskAttempt attempt_{n}_m_{n}_0 is : 0.{n} after {ms} ms "
        "in container container_{n}_01",
        "Diagnostics report from attempt_{n}_m_{n}_0: Container killed by the "
        "ApplicationMaster on request",
    ),
    "spark-executor": (
        "Finished task {n}.0 in stage {n}.0 (TID {n}) in {ms} ms on host "
        "{ip} (executor {n}) ({n}/{n} done)",
        "Running task {n}.0 in stage {n}.0 (TID {n}), reading broadcast "
        "variable {n} took {ms} ms from block manager",
    ),
    "openstack-nova": (
        'nova.osapi_compute.wsgi.server "GET /v2/{h}/servers/detail HTTP/1.1" '
        "status: 200 len: 1893 time: 0.{n}",
        "[instance: {h}] VM Started (Lifecycle Event) after {ms} ms, "
        "sync_power_state from compute host {ip}",
    ),
    "apache-httpd": (
        "jk2_init() Found child {n} in scoreboard slot {n} after worker "
        "restart, mod_jk child workerEnv in error state {n}",
        "[client {ip}] Directory index forbidden by rule: /var/www/html/ "
        "request took {ms} ms to deny",
    ),
    "openssh": (
        "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 "
        "tty=ssh ruser= rhost={ip} user=root",
        "Received disconnect from {ip}: 11: Bye Bye [preauth] session {h} "
        "closed after {ms} ms idle",
    ),
    "android-system": (
        "ActivityManager: Start proc {n}:com.android.phone/u0a{n} for service "
        "com.android.phone/.TelephonyDebugService",
        "PowerManagerService: acquire lock={n}, flags=0x1, tag=RILJ_ACK_WL, "
        "ws=null, uid={n}, pid={n} held {ms} ms",
    ),
    "zookeeper": (
        "Accepted socket connection from /{ip}:{n} on quorum peer {n}; "
        "session 0x{h} established with limit 30000",
        "Expiring session 0x{h}, idle time of 10000ms exceeded; closing "
        "socket connection for client /{ip}:{n}",
    ),
    "proxifier": (
        "chrome.exe - proxy.cse.cuhk.edu.hk:5070 open through proxy "
        "proxy.cse.cuhk.edu.hk:5070 HTTPS, {n} bytes sent, {ms} ms",
        "chrome.exe - {ip}:443 close, {n} bytes sent, {n} bytes received, "
        "lifetime {ms} ms through proxy",
    ),
    "thunderbird-kernel": (
        "kernel: [KERNEL_IB][ib_sm_sweep.c:{n}]: Fabric sweep {n} completed "
        "in {ms} ms, {n} ports active on switch {h}",
        "kernel: EXT3-fs error (device sda{n}): ext3_find_entry: reading "
        "directory #{n} offset {n} after retry",
    ),
    "windows-cbs": (
        "CBS Loaded Servicing Stack v6.1.7601.{n} with Core: "
        "C:\\Windows\\winsxs\\amd64_microsoft-windows-servicingstack_{h}",
        "CSI {n} Warning: Overlap: Duplicate ownership for directory "
        "\\??\\C:\\Windows\\System32\\{h} in component {n}",
    ),
}

SERVICES: tuple[str, ...] = tuple(_TEMPLATES)


class EntryFactory:
    """Builds seeded synthetic `LogEntry` messages with timestamps in a range."""

    def __init__(self, seed: int = 1) -> None:
        self._random = random.Random(seed)
        severities, weights = zip(*_SEVERITY_WEIGHTS, strict=True)
        self._severities = list(severities)
        self._weights = list(weights)

    def _fill(self, template: str) -> str:
        rand = self._random
        text = template
        while "{n}" in text:
            text = text.replace("{n}", str(rand.randrange(1, 99999)), 1)
        while "{h}" in text:
            text = text.replace("{h}", f"{rand.getrandbits(48):012x}", 1)
        while "{ip}" in text:
            address = ".".join(str(rand.randrange(1, 255)) for _ in range(4))
            text = text.replace("{ip}", address, 1)
        return text.replace("{ms}", str(rand.randrange(1, 30000)))

    def _suffix(self) -> str:
        # The suffix brings messages to about 140 bytes, and one in 30 gets
        # the keyword.
        rand = self._random
        if rand.randrange(30) == 0:
            return f"; read {KEYWORD} after {rand.randrange(100, 9999)} ms"
        return f"; request {rand.getrandbits(64):016x}"

    def entry(self, timestamp_ns: int, service: str | None = None) -> pb.LogEntry:
        """Build one entry at `timestamp_ns`, from a random service if none given."""
        rand = self._random
        service = service or rand.choice(SERVICES)
        severity = rand.choices(self._severities, self._weights)[0]
        timestamp = Timestamp(
            seconds=timestamp_ns // 1_000_000_000, nanos=timestamp_ns % 1_000_000_000
        )
        return pb.LogEntry(
            timestamp=timestamp,
            severity=severity,
            service=service,
            host=f"node-{rand.randrange(1, 41):02d}",
            message=self._fill(rand.choice(_TEMPLATES[service])) + self._suffix(),
            attributes={"thread": f"worker-{rand.randrange(1, 17)}"},
        )

    def entries(self, count: int, start_ns: int, end_ns: int) -> list[pb.LogEntry]:
        """Build `count` entries with random timestamps in [start_ns, end_ns)."""
        span = max(1, end_ns - start_ns)
        return [
            self.entry(start_ns + self._random.randrange(span)) for _ in range(count)
        ]

    def files(
        self, count: int, file_entries: int, start_ns: int, end_ns: int
    ) -> list[pb.LogEntry]:
        """Build `count` entries in runs of `file_entries` from one log file.

        The entries of a run share a random service and host, and carry the
        file's name as their only attribute, as `splitlog logs ship` sends
        them. Their timestamps rise within the run.
        """
        rand = self._random
        entries: list[pb.LogEntry] = []
        while len(entries) < count:
            service = rand.choice(SERVICES)
            attributes = {"log.file.name": f"{service}-{rand.randrange(1, 99)}.log"}
            host = f"node-{rand.randrange(1, 41):02d}"
            size = min(file_entries, count - len(entries))
            for timestamp in sorted(
                start_ns + rand.randrange(max(1, end_ns - start_ns))
                for _ in range(size)
            ):
                entry = self.entry(timestamp, service)
                entry.host = host
                entry.attributes.clear()
                entry.attributes.update(attributes)
                entries.append(entry)
        return entries

    def batches(
        self, total: int, batch_size: int, start_ns: int, end_ns: int
    ) -> Iterator[list[pb.LogEntry]]:
        """Yield batches of up to `batch_size` entries, `total` entries in all."""
        remaining = total
        while remaining > 0:
            size = min(batch_size, remaining)
            remaining -= size
            yield self.entries(size, start_ns, end_ns)


def append_columns(columns, entry: pb.LogEntry, ts: int, observed_ts: int) -> None:
    """Append `entry`, stamped `ts` and observed at `observed_ts`, to a log
    node's `EntryColumns`, in the form a node stores for a plain log line."""
    columns.timestamps.append(ts)
    columns.observed_timestamps.append(observed_ts)
    columns.severities.append(entry.severity)
    columns.services.append(entry.service)
    columns.hosts.append(entry.host)
    columns.messages.append(entry.message)
    columns.attributes.append(json.dumps(dict(entry.attributes), sort_keys=True))
    columns.trace_ids.append("")
    columns.span_ids.append("")
    columns.truncated.append(False)
    columns.dropped_attributes_counts.append(0)
