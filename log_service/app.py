"""Start log_service's router.

`build` starts the router: the public LogsService, OTLP's
`opentelemetry.proto.collector.logs.v1.LogsService/Export`, the coordinator
that polls the nodes, a health entry per shard (see `shard_health`), and the
retention thread. The nodes start elsewhere:
`splitlog_cli.components.start_log_nodes` runs them all in one process for
`splitlog up`, and `splitlog serve log_node` runs one.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from log_service.clients import NodeClients
from log_service.coordinator import Coordinator
from log_service.ingest_counters import IngestCounters
from log_service.model import Limits
from log_service.open_streams import OpenStreams
from log_service.placement import (
    PLACEMENT_FILE_NAME,
    Placement,
    PlacementRecord,
    check_placement,
)
from log_service.replica_reads import ShardReader
from log_service.retention import (
    MISSED_PASSES_FILE_NAME,
    RetentionEnforcer,
    RetentionStore,
)
from log_service.router import (
    OTLP_SERVICE,
    LogsServicer,
    OtlpLogsServicer,
    Writer,
    add_logs_servicer_to_server,
    add_otlp_servicer_to_server,
)
from log_service.shard_health import ShardHealth
from log_service.sharding import sharder_from_config
from log_service.topology import topology_from_config
from splitlog.logs.v1 import logs_service_pb2
from splitlog_runtime import auth, private_files
from splitlog_runtime.config import Config, SettingsError
from splitlog_runtime.server import ServiceHost
from splitlog_runtime.service import start_service

_LOGGER = logging.getLogger(__name__)

SERVICE = logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"]
WRITE_QUORUMS = ("all", "leader")


def router_data_dir(config: Config) -> Path:
    """Return the folder of the router's own files."""
    return Path(config.data_dir) / "log_service"


def build(config: Config, address: str | None = None) -> ServiceHost:
    """Start the router and return its running host.

    Raises:
      SettingsError: a log setting is invalid, or contradicts the placement
        record; the message names it.
    """
    host, _ = build_router(config, address)
    return host


def build_router(
    config: Config, address: str | None = None
) -> tuple[ServiceHost, Coordinator]:
    """Start the router; return its host and its coordinator.

    Raises:
      SettingsError: a log setting is invalid, or contradicts the placement
        record; the message names it.
    """
    try:
        topology = topology_from_config(config)
        # Checks log_sharding and log_time_bucket_seconds before the record does.
        sharder_from_config(config, topology)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    quorum = config.log_write_quorum.strip().lower()
    if quorum not in WRITE_QUORUMS:
        raise SettingsError(
            "log_write_quorum must be `all` or `leader`, got "
            f"{config.log_write_quorum!r}"
        )
    open_streams = OpenStreams(
        config.log_max_open_streams, config.log_max_streams_per_caller
    )
    data_dir = router_data_dir(config)
    private_files.private_tree(data_dir)
    # A crash while sharding.json, the coordinator's state or the retention
    # policy was being replaced leaves a temporary file of it.
    private_files.remove_abandoned_temporary_files_in(data_dir)
    history = check_placement(
        data_dir,
        Placement.from_config(config, topology),
        time.time_ns(),
        Limits.from_config(config).max_future_ns,
    )
    sharder = history.sharder(topology.shard_ids)
    placement_record = PlacementRecord(data_dir / PLACEMENT_FILE_NAME, history)
    if config.auth_required:
        # Before the coordinator's first poll, so that the nodes accept it.
        auth.install_signer_from_settings(config.auth_secret, config.data_dir)
    clients = NodeClients(config.max_message_bytes, sign=config.auth_required)
    coordinator = Coordinator(
        topology,
        clients,
        Path(config.data_dir),
        failover_seconds=config.log_failover_seconds,
        leader_only_ack=quorum == "leader",
    )
    counters = IngestCounters(data_dir / "ingest_counters.db")
    retention = RetentionStore(data_dir / "retention.json", config.log_retention_hours)

    def stub_for(node_address: str):
        return clients.stubs(node_address).node

    enforcer = RetentionEnforcer(
        retention,
        coordinator.shard_replicas,
        stub_for,
        missed_path=data_dir / MISSED_PASSES_FILE_NAME,
    )
    writer = Writer(
        coordinator,
        sharder,
        clients,
        Limits.from_config(config),
        retention,
        counters,
        config.deadline_seconds,
        config.max_message_bytes,
        placement_record,
    )
    reader = ShardReader(coordinator, stub_for, config.deadline_seconds)
    servicer = LogsServicer(
        writer,
        reader,
        sharder,
        coordinator,
        retention,
        counters,
        stub_for,
        open_streams,
        added_shards=frozenset(history.shards - set(history.placements[0].shards)),
        placements=history.to_proto(),
    )
    otlp = OtlpLogsServicer(writer, retention)

    coordinator.start()
    try:
        host = start_service(
            "log_service",
            config,
            [
                lambda s: add_logs_servicer_to_server(servicer, s),
                lambda s: add_otlp_servicer_to_server(otlp, s),
            ],
            [SERVICE.full_name, OTLP_SERVICE],
            address=address,
            # Each open tail or stream occupies a handler thread, so the
            # threads of `workers` stay free for the other calls.
            stream_workers=open_streams.maximum,
        )
    except BaseException:
        coordinator.stop()
        counters.close()
        clients.close()
        servicer.shut_down_stream_pool()
        raise
    shard_health = ShardHealth(host.health, topology.shard_ids)
    coordinator.add_round_listener(
        lambda: shard_health.update(coordinator.leaders_responding())
    )
    shard_health.update(coordinator.leaders_responding())
    coordinator.add_round_listener(writer.leaders_polled)
    coordinator.add_round_listener(
        lambda: enforcer.nodes_polled(coordinator.reachable_addresses())
    )
    enforcer.start()
    # Runs last: once the node channels are closed, the running stream
    # batches end at once.
    host.on_stop(servicer.shut_down_stream_pool)
    host.on_stop(clients.close)
    host.on_stop(writer.close)
    host.on_stop(counters.close)
    host.on_stop(coordinator.stop)
    host.on_stop(enforcer.stop)
    # Runs first, because the closers run in reverse order: the tails' threads
    # call the node channels that `clients.close` closes.
    host.on_stop(servicer.close)
    return host, coordinator
