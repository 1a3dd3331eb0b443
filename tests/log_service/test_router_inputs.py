"""Bad write and query input, checked through a real router and real nodes.

A router with two shards of one node each listens on 127.0.0.1. Long request
ids, tampered page and resume tokens, Timestamps with nanos out of range and
histogram steps out of range must each get INVALID_ARGUMENT with a message
that names the field, the value and the fix, or a per-entry rejection.
"""

from __future__ import annotations

import base64
import json
import time
import uuid

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from google.rpc import error_details_pb2

from log_service.request_ids import MAX_REQUEST_ID_BYTES
from splitlog.logs.v1 import logs_service_pb2 as pb
from splitlog_runtime import config as config_module
from tests.log_service.router_support import details_of, violated_fields
from tests.log_service.test_router_cluster import Cluster, list_all, ts

SECOND = 10**9


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path_factory.mktemp("logs"),
            "grace_seconds": 1.0,
        },
    )
    running = Cluster(
        base.replace(
            log_shards=2, log_replicas=1, log_node_port=0, log_fsync=False, workers=4
        )
    )
    yield running
    running.close()


def _service(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _reason(error: grpc.RpcError) -> str:
    (info,) = details_of(error, error_details_pb2.ErrorInfo)
    return info.reason


def _failed_batches(cluster) -> int:
    """Return the failed batches that the router counted in the last hour."""
    now = time.time_ns()
    window = pb.GetLogStatsRequest(
        start_time=ts(now - 3600 * SECOND), end_time=ts(now + SECOND)
    )
    return cluster.stub.GetLogStats(window).ingest_counters.failed_batch_count


# request_id length


def test_request_id_at_limit_is_accepted(cluster):
    service = _service("id-limit")
    # 128 characters of 4 bytes each: 512 bytes.
    request_id = "\U0001f600" * (MAX_REQUEST_ID_BYTES // 4)
    request = pb.WriteLogEntriesRequest(
        entries=[pb.LogEntry(service=service, message="kept")], request_id=request_id
    )

    first = cluster.stub.WriteLogEntries(request)
    second = cluster.stub.WriteLogEntries(request)

    assert first.accepted_count == 1
    assert second.duplicate_count == 1
    assert len(list_all(cluster.stub, services=[service])) == 1


@pytest.mark.parametrize(
    "request_id, size",
    [("a" * (MAX_REQUEST_ID_BYTES + 1), 513), ("\u00e9" * 257, 514)],
)
def test_write_entries_rejects_long_request_id(cluster, request_id, size):
    service = _service("id-long")
    failed_before = _failed_batches(cluster)
    request = pb.WriteLogEntriesRequest(
        entries=[pb.LogEntry(service=service, message="never stored")],
        request_id=request_id,
    )

    with pytest.raises(grpc.RpcError) as caught:
        cluster.stub.WriteLogEntries(request)

    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == ["request_id"]
    assert _reason(error) == "REQUEST_ID_TOO_LONG"
    assert f"is {size} bytes long in UTF-8" in error.details()
    assert f"over the limit of {MAX_REQUEST_ID_BYTES} bytes" in error.details()
    assert "send a shorter id, such as a UUID" in error.details()
    assert list_all(cluster.stub, services=[service]) == []
    assert _failed_batches(cluster) == failed_before + 1


def test_write_entry_rejects_long_request_id(cluster):
    service = _service("id-long-one")
    request = pb.WriteLogEntryRequest(
        entry=pb.LogEntry(service=service, message="never stored"),
        request_id="x" * 8 * 1024 * 1024,
    )

    with pytest.raises(grpc.RpcError) as caught:
        cluster.stub.WriteLogEntry(request)

    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == ["request_id"]
    assert "is 8388608 bytes long in UTF-8" in error.details()
    assert list_all(cluster.stub, services=[service]) == []


def test_stream_rejects_long_request_id_by_message(cluster):
    service = _service("id-long-stream")
    requests = [
        pb.StreamLogEntriesRequest(
            entries=[pb.LogEntry(service=service, message="first")],
            request_id=str(uuid.uuid4()),
        ),
        pb.StreamLogEntriesRequest(
            entries=[pb.LogEntry(service=service, message="second")],
            request_id="y" * 600,
        ),
    ]

    with pytest.raises(grpc.RpcError) as caught:
        cluster.stub.StreamLogEntries(iter(requests))

    error = caught.value
    (info,) = details_of(error, error_details_pb2.ErrorInfo)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == ["request_id"]
    assert error.details().startswith("request message 1 of the call")
    assert "is 600 bytes long in UTF-8" in error.details()
    assert info.reason == "REQUEST_ID_TOO_LONG"
    assert info.metadata["request_message"] == "1"
    stored = list_all(cluster.stub, services=[service])
    assert [entry.message for entry in stored] == ["first"]


# Page and resume tokens


def _decode_token(text: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def _encode_token(payload: dict) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.fixture(scope="module")
def page_token(cluster):
    """Return the services and the first page token of a listing of them."""
    service = _service("paged")
    entries = [pb.LogEntry(service=service, message=f"m{i}") for i in range(5)]
    cluster.stub.WriteLogEntries(pb.WriteLogEntriesRequest(entries=entries))
    page = cluster.stub.ListLogEntries(
        pb.ListLogEntriesRequest(services=[service], page_size=2)
    )
    assert page.next_page_token
    return [service], _decode_token(page.next_page_token)


def _tampered(payload: dict, key: str, value) -> dict:
    changed = json.loads(json.dumps(payload))
    if key == "c0":
        changed["c"][0] = value
    elif key == "c2":
        changed["c"][2] = value
    elif key == "s":
        changed["s"] = {shard: value for shard in changed["s"]}
    elif key == "c1":
        changed["c"][1] = value
    elif key == "s_shard":
        changed["s"][value] = 0
    elif key == "s_raised":
        changed["s"] = {shard: bound + value for shard, bound in changed["s"].items()}
    else:
        changed[key] = value
    return changed


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("e", 10**20, "the end time 100000000000000000000 ns is outside"),
        ("e", -(10**30), "is outside the int64 range"),
        ("c0", 10**30, f"the time of the last entry {10**30} ns is outside"),
        ("c2", 10**25, "is over the int64 maximum"),
        ("s", 10**20, "sequence 100000000000000000000 of shard"),
        ("e", 1.5, "is not a page token returned by this method"),
        ("e", "12", "is not a page token returned by this method"),
        ("c2", True, "is not a page token returned by this method"),
        ("c1", "shard-9", "is not a page token returned by this method"),
        ("s_shard", "shard-9", "is not a page token returned by this method"),
        ("c0", 0, "does not match its check hash, so it was altered"),
        ("c0", 2**63 - 1, "does not match its check hash, so it was altered"),
        ("s_raised", 1, "does not match its check hash, so it was altered"),
        ("v", True, "is not a page token returned by this method"),
        ("x", 1, "the page token has unknown key(s) 'x', so it was altered"),
    ],
)
def test_tampered_page_token_is_invalid(cluster, page_token, key, value, expected):
    services, payload = page_token
    token = _encode_token(_tampered(payload, key, value))

    with pytest.raises(grpc.RpcError) as caught:
        cluster.stub.ListLogEntries(
            pb.ListLogEntriesRequest(services=services, page_size=2, page_token=token)
        )

    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == ["page_token"]
    assert _reason(error) == "INVALID_PAGE_TOKEN"
    assert expected in error.details()
    assert "start the listing again without a page token" in error.details()


def test_untampered_page_token_still_pages(cluster, page_token):
    services, payload = page_token

    page = cluster.stub.ListLogEntries(
        pb.ListLogEntriesRequest(
            services=services, page_size=2, page_token=_encode_token(payload)
        )
    )

    assert len(page.entries) == 2


def test_tail_resume_token_over_int64_is_invalid(cluster):
    services = [_service("tailed")]
    call = cluster.stub.TailLogEntries(
        pb.TailLogEntriesRequest(services=services), timeout=10
    )
    payload = _decode_token(next(call).resume_token)
    call.cancel()
    payload["p"] = {"shard-0": 10**20}

    with pytest.raises(grpc.RpcError) as caught:
        resumed = cluster.stub.TailLogEntries(
            pb.TailLogEntriesRequest(
                services=services, resume_token=_encode_token(payload)
            ),
            timeout=10,
        )
        next(resumed)

    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == ["resume_token"]
    assert "sequence 100000000000000000000 of shard shard-0" in error.details()
    assert "start a new tail without a resume token" in error.details()


@pytest.fixture(scope="module")
def resume_token(cluster):
    """Return the services and a resume token of a tail after two entries."""
    services = [_service("resumed")]
    entries = [pb.LogEntry(service=services[0], message=f"m{i}") for i in range(2)]
    cluster.stub.WriteLogEntries(pb.WriteLogEntriesRequest(entries=entries))
    call = cluster.stub.TailLogEntries(
        pb.TailLogEntriesRequest(services=services), timeout=10
    )
    payload = _decode_token(next(call).resume_token)
    call.cancel()
    (shard,) = payload["p"]
    assert payload["p"][shard] > 0
    assert payload["e"][shard] > 0
    return services, payload


def _position_zero(payload: dict) -> None:
    for shard in payload["p"]:
        payload["p"][shard] = 0


def _epoch_plus_one(payload: dict) -> None:
    for shard in payload["e"]:
        payload["e"][shard] += 1


def _moved_to_unopened(payload: dict) -> None:
    payload["u"] = sorted(payload["p"])
    payload["p"] = {}
    payload["e"] = {}


@pytest.mark.parametrize("edit", [_position_zero, _epoch_plus_one, _moved_to_unopened])
def test_edited_resume_token_is_rejected(cluster, resume_token, edit):
    services, payload = resume_token
    changed = json.loads(json.dumps(payload))
    edit(changed)

    with pytest.raises(grpc.RpcError) as caught:
        resumed = cluster.stub.TailLogEntries(
            pb.TailLogEntriesRequest(
                services=services, resume_token=_encode_token(changed)
            ),
            timeout=10,
        )
        next(resumed)

    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == ["resume_token"]
    assert _reason(error) == "INVALID_PAGE_TOKEN"
    assert "does not match its check hash, so it was altered" in error.details()
    assert "start a new tail without a resume token" in error.details()


def test_unedited_resume_token_still_resumes(cluster, resume_token):
    services, payload = resume_token
    resumed = cluster.stub.TailLogEntries(
        pb.TailLogEntriesRequest(
            services=services, resume_token=_encode_token(payload)
        ),
        timeout=10,
    )
    next(resumed)
    cluster.stub.WriteLogEntries(
        pb.WriteLogEntriesRequest(
            entries=[pb.LogEntry(service=services[0], message="after")]
        )
    )

    messages = []
    for response in resumed:
        messages.extend(entry.message for entry in response.entries)
        if messages:
            break
    resumed.cancel()

    assert messages == ["after"]


# Timestamp nanos out of range


def _stamp(seconds: int, nanos: int) -> timestamp_pb2.Timestamp:
    # The constructor keeps nanos as sent, out of range too.
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


@pytest.mark.parametrize("nanos", [-1, 1_999_999_999])
def test_write_entries_rejects_bad_nanos_per_entry(cluster, nanos):
    service = _service("nanos")
    now = time.time_ns() // SECOND
    entries = [
        pb.LogEntry(service=service, message="zero", timestamp=_stamp(now, 5)),
        pb.LogEntry(service=service, message="one", timestamp=_stamp(now, nanos)),
        pb.LogEntry(service=service, message="two"),
        pb.LogEntry(
            service=service, message="three", observed_timestamp=_stamp(now, nanos)
        ),
    ]

    response = cluster.stub.WriteLogEntries(pb.WriteLogEntriesRequest(entries=entries))

    rejected = response.rejected_entries
    assert response.accepted_count == 2
    assert response.rejected_count == 2
    assert [item.index for item in rejected] == [1, 3]
    assert [item.reason for item in rejected] == [pb.REJECTION_REASON_INVALID_FIELD] * 2
    assert [item.field for item in rejected] == ["timestamp", "observed_timestamp"]
    assert f"timestamp.nanos {nanos} is outside 0 to 999999999" in (
        rejected[0].description
    )
    assert "put the whole seconds in timestamp.seconds" in rejected[0].description
    assert f"observed_timestamp.nanos {nanos} is outside" in rejected[1].description
    stored = list_all(cluster.stub, services=[service], order_by="timestamp")
    assert sorted(entry.message for entry in stored) == ["two", "zero"]


def test_write_entry_rejects_bad_nanos(cluster):
    service = _service("nanos-one")
    entry = pb.LogEntry(
        service=service, message="never stored", timestamp=_stamp(1, -1)
    )

    with pytest.raises(grpc.RpcError) as caught:
        cluster.stub.WriteLogEntry(pb.WriteLogEntryRequest(entry=entry))

    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == ["entry.timestamp"]
    assert "timestamp.nanos -1 is outside 0 to 999999999" in error.details()
    assert list_all(cluster.stub, services=[service]) == []


def test_stream_nanoseconds_unaffected(cluster):
    service = _service("nanos-stream")
    now = time.time_ns()
    stream = pb.LogStream(
        service=service,
        messages=["a", "b"],
        timestamps_unix_nano=[now - SECOND + 999_999_999, now - SECOND + 1],
    )

    response = cluster.stub.WriteLogEntries(pb.WriteLogEntriesRequest(streams=[stream]))

    assert response.accepted_count == 2
    stored = list_all(cluster.stub, services=[service], order_by="timestamp")
    assert [entry.timestamp.ToNanoseconds() for entry in stored] == [
        now - SECOND + 1,
        now - SECOND + 999_999_999,
    ]


# Durations and times in messages


@pytest.mark.parametrize(
    "step, expected",
    [
        (
            duration_pb2.Duration(nanos=1),
            "0.000000001s is shorter than the minimum of 1s",
        ),
        (
            duration_pb2.Duration(seconds=10**12),
            "1000000000000s is longer than the maximum",
        ),
        (
            duration_pb2.Duration(seconds=5, nanos=-1),
            "seconds 5 with nanos -1 is not a valid Duration",
        ),
    ],
)
def test_stats_step_error_prints_exact_seconds(cluster, step, expected):
    with pytest.raises(grpc.RpcError) as caught:
        cluster.stub.GetLogStats(pb.GetLogStatsRequest(histogram_step=step))

    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == ["histogram_step"]
    assert expected in error.details()
    assert "e-" not in error.details()
    assert "e+" not in error.details()


def test_far_future_rejection_names_time_once(cluster):
    service = _service("future")
    entry = pb.LogEntry(
        service=service, message="late", timestamp=_stamp(253_402_300_800, 0)
    )

    response = cluster.stub.WriteLogEntries(pb.WriteLogEntriesRequest(entries=[entry]))

    (rejection,) = response.rejected_entries
    assert rejection.reason == pb.REJECTION_REASON_TIMESTAMP_IN_FUTURE
    assert rejection.description.startswith(
        "timestamp 253402300800000000000 ns since 1970 is "
    )
    assert rejection.description.count("253402300800000000000") == 1
