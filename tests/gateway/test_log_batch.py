"""POST /logs/batch with lone surrogates: a real gateway and log cluster.

An entry whose JSON contains half of a surrogate pair is rejected on its own,
by its index in the batch, and the other entries are stored.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

import httpx
import pytest

from gateway.log_batch import SplitBatch
from gateway.rest import OFF_LOOP_BODY_BYTES, run_off_loop_if_large
from splitlog.logs.v1 import logs_service_pb2 as logs_pb2
from tests.log_service.test_router_cluster import list_all

OLD = "2001-09-09T01:46:40Z"


def _post(live, body: str, timeout: float = 10) -> httpx.Response:
    url = f"http://127.0.0.1:{live.gateway.http_port}/logs/batch"
    headers = {"content-type": "application/json"}
    return httpx.post(url, content=body.encode(), headers=headers, timeout=timeout)


def test_batch_rejects_entry_with_lone_surrogate(live):
    service = f"surrogate-{uuid.uuid4().hex[:8]}"
    body = (
        '{"entries": ['
        f'{{"service": "{service}", "message": "zero"}},'
        f'{{"service": "{service}", "message": "a\\ud800b"}},'
        f'{{"service": "{service}", "message": "old", "timestamp": "{OLD}"}},'
        f'{{"service": "{service}", "attributes": {{"k\\udfff": "v"}}}},'
        f'{{"service": "{service}", "message": "four \\ud83d\\ude00"}}'
        "]}"
    )

    response = _post(live, body)

    assert response.status_code == 200, response.text
    result = response.json()
    rejected = result["rejectedEntries"]
    assert result["acceptedCount"] == 2
    assert result["rejectedCount"] == 3
    assert [int(item.get("index", 0)) for item in rejected] == [1, 2, 3]
    assert [item["reason"] for item in rejected] == [
        "REJECTION_REASON_INVALID_FIELD",
        "REJECTION_REASON_TIMESTAMP_TOO_OLD",
        "REJECTION_REASON_INVALID_FIELD",
    ]
    assert rejected[0]["field"] == "message"
    assert (
        "the string is not valid Unicode: the escape \\ud800"
        in (rejected[0]["description"])
    )
    assert rejected[2]["field"] == "attributes"
    assert (
        'the object key "k\\udfff" is not valid Unicode' in (rejected[2]["description"])
    )
    stored = list_all(live.stub, services=[service], order_by="timestamp")
    assert [entry.message for entry in stored] == ["zero", "four \U0001f600"]


def test_batch_of_only_bad_entries(live):
    service = f"surrogate-{uuid.uuid4().hex[:8]}"
    body = (
        f'{{"entries": [{{"service": "{service}", "message": "\\udc00"}},'
        f'{{"service": "{service}", "message": "\\udc01"}}]}}'
    )

    response = _post(live, body)

    assert response.status_code == 200, response.text
    result = response.json()
    assert result.get("acceptedCount", 0) == 0
    assert result["rejectedCount"] == 2
    assert [int(item.get("index", 0)) for item in result["rejectedEntries"]] == [0, 1]
    # Only the first rejection of a reason and field carries a description.
    assert "description" in result["rejectedEntries"][0]
    assert "description" not in result["rejectedEntries"][1]
    assert list_all(live.stub, services=[service]) == []


def test_batch_resend_stored_once(live):
    service = f"surrogate-{uuid.uuid4().hex[:8]}"
    body = (
        f'{{"requestId": "{uuid.uuid4()}", "entries": ['
        f'{{"service": "{service}", "message": "\\ud800"}},'
        f'{{"service": "{service}", "message": "kept"}}]}}'
    )

    first = _post(live, body)
    resent = _post(live, body)

    assert first.status_code == 200, first.text
    # The resend gets the first response, with the kept entry counted as
    # already stored.
    assert resent.json() == {**first.json(), "duplicateCount": 1}
    assert first.json().get("duplicateCount", 0) == 0
    assert first.json()["acceptedCount"] == 1
    assert [e.message for e in list_all(live.stub, services=[service])] == ["kept"]


def test_merge_stops_where_listing_stopped():
    split = SplitBatch(
        b"",
        kept=[0, 2, 4],
        rejections=[
            logs_pb2.LogEntryRejection(index=1, field="message"),
            logs_pb2.LogEntryRejection(index=3, field="message"),
        ],
    )
    # log_service rejected entries 0 and 2 of the client's batch but listed
    # only the first.
    response = logs_pb2.WriteLogEntriesResponse(
        accepted_count=1,
        rejected_count=2,
        rejected_entries=[logs_pb2.LogEntryRejection(index=0)],
    )

    merged = split.merge(response)

    assert merged.accepted_count == 1
    assert merged.rejected_count == 4
    assert [rejection.index for rejection in merged.rejected_entries] == [0]


def test_batch_with_streams_stores_them(live):
    service = f"rest-streams-{uuid.uuid4().hex[:8]}"
    body = json.dumps(
        {
            "entries": [{"service": service, "message": "entry"}],
            "streams": [
                {
                    "service": service,
                    "host": "node-1",
                    "attributes": {"file": "app.log"},
                    "messages": ["first", "old", "third"],
                    "timestampsUnixNano": ["0", "1000000000000000000", "0"],
                    "severities": ["SEVERITY_WARN", "SEVERITY_INFO", 17],
                }
            ],
        }
    )

    response = _post(live, body)

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["acceptedCount"] == 3
    assert [int(item["index"]) for item in result["rejectedEntries"]] == [2]
    assert result["rejectedEntries"][0]["field"] == "timestamp"
    stored = {e.message: e for e in list_all(live.stub, services=[service])}
    assert sorted(stored) == ["entry", "first", "third"]
    assert stored["third"].severity == logs_pb2.SEVERITY_ERROR
    assert stored["first"].host == "node-1"
    assert dict(stored["first"].attributes) == {"file": "app.log"}


def test_batch_streams_reject_lone_surrogates_per_entry(live):
    service = f"surrogate-{uuid.uuid4().hex[:8]}"
    body = (
        '{"entries": ['
        f'{{"service": "{service}", "message": "e0"}}],'
        '"streams": ['
        f'{{"service": "{service}", "messages": ["s1", "bad \\ud800", "s3"],'
        ' "severities": [13, 17, 21], "timestamps_unix_nano": [0, 0, "0"]},'
        f'{{"service": "{service}", "attributes": {{"k": "\\udfff"}},'
        ' "messages": ["x4", "x5"]},'
        f'{{"service": "{service}", "messages": ["s6"]}}'
        "]}"
    )

    response = _post(live, body)

    assert response.status_code == 200, response.text
    result = response.json()
    rejected = result["rejectedEntries"]
    assert result["acceptedCount"] == 4
    assert result["rejectedCount"] == 3
    assert [int(item["index"]) for item in rejected] == [2, 4, 5]
    assert [item["field"] for item in rejected] == [
        "message",
        'attributes["k"]',
        'attributes["k"]',
    ]
    stored = {e.message: e.severity for e in list_all(live.stub, services=[service])}
    assert stored == {
        "e0": logs_pb2.SEVERITY_INFO,
        "s1": logs_pb2.SEVERITY_WARN,
        "s3": logs_pb2.SEVERITY_FATAL,
        "s6": logs_pb2.SEVERITY_INFO,
    }


def test_batch_streams_reject_bad_column_values_per_entry(live):
    service = f"columns-{uuid.uuid4().hex[:8]}"
    body = (
        '{"streams": ['
        f'{{"service": "{service}", "messages": ["s0", "s1", "s2"],'
        ' "severities": [13, "\\ud800", 17],'
        ' "timestampsUnixNano": ["\\udfff", "0", "0"]},'
        f'{{"service": "{service}", "messages": ["n3", "n4 \\ud800"],'
        ' "severities": null, "timestamps_unix_nano": null}'
        "]}"
    )

    response = _post(live, body)

    assert response.status_code == 200, response.text
    result = response.json()
    rejected = result["rejectedEntries"]
    assert result["acceptedCount"] == 2
    assert [int(item.get("index", 0)) for item in rejected] == [0, 1, 4]
    assert [item["field"] for item in rejected] == ["timestamp", "severity", "message"]
    assert "\\udfff" in rejected[0]["description"]
    assert "\\ud800" in rejected[1]["description"]
    stored = {e.message: e.severity for e in list_all(live.stub, services=[service])}
    assert stored == {"s2": logs_pb2.SEVERITY_ERROR, "n3": logs_pb2.SEVERITY_INFO}


def _error(response: httpx.Response) -> tuple[str, list[str]]:
    """Return the reason and the violated fields of an error response."""
    details = response.json()["error"]["details"]
    reasons = [d["reason"] for d in details if d["@type"].endswith("ErrorInfo")]
    fields = [
        violation["field"]
        for detail in details
        if detail["@type"].endswith("BadRequest")
        for violation in detail["fieldViolations"]
    ]
    return reasons[0], fields


def test_batch_stream_column_mismatch_beats_surrogates(live):
    service = f"mismatch-{uuid.uuid4().hex[:8]}"
    body = (
        f'{{"entries": [{{"service": "{service}", "message": "e \\ud800"}}],'
        '"streams": ['
        f'{{"service": "{service} \\ud800", "messages": ["a"]}},'
        f'{{"service": "{service}", "messages": ["b \\ud800", "c"],'
        ' "severities": [9]}'
        "]}"
    )

    response = _post(live, body)

    assert response.status_code == 400, response.text
    assert _error(response) == ("COLUMN_LENGTH_MISMATCH", ["streams[1].severities"])
    assert "has 1 values for 2 messages" in response.json()["error"]["message"]
    assert list_all(live.stub, services=[service]) == []


def test_batch_stream_unknown_field_with_surrogate(live):
    service = f"unknown-{uuid.uuid4().hex[:8]}"
    body = (
        '{"streams": ['
        f'{{"service": "{service}", "messages": ["a"], "bogus": "\\ud800"}}'
        "]}"
    )

    response = _post(live, body)

    assert response.status_code == 400, response.text
    reason, fields = _error(response)
    assert reason == "UNKNOWN_FIELD"
    assert fields == ["streams[0].bogus"]
    assert list_all(live.stub, services=[service]) == []


@pytest.mark.parametrize("with_surrogate", [False, True])
def test_batch_stream_timestamps_with_fraction_exact(live, with_surrogate):
    service = f"exact-{uuid.uuid4().hex[:8]}"
    # Odd nanoseconds that a float would round to a multiple of 256.
    base = time.time_ns() // 1000 * 1000 - 10**9 + 497
    messages = (
        '["n0", "n1", "n2", "n3", "bad \\ud800"]'
        if with_surrogate
        else ('["n0", "n1", "n2", "n3", "n4"]')
    )
    body = (
        '{"streams": ['
        f'{{"service": "{service}", "messages": {messages},'
        f' "timestampsUnixNano": [{base}.0, "{base + 1}.0", {base + 2}e0,'
        f' "{base + 3}E0", {base + 4}]}}'
        "]}"
    )

    response = _post(live, body)

    assert response.status_code == 200, response.text
    stored = list_all(live.stub, services=[service], order_by="timestamp")
    times = [entry.timestamp.ToNanoseconds() for entry in stored]
    assert times[:4] == [base, base + 1, base + 2, base + 3]


def test_batch_stream_timestamp_with_fraction_rejected(live):
    body = (
        '{"streams": [{"service": "exact", "messages": ["a"],'
        ' "timestampsUnixNano": [1796454162487453497.5]}]}'
    )

    response = _post(live, body)

    assert response.status_code == 400, response.text
    assert _error(response) == (
        "INVALID_FIELD_VALUE",
        ["streams[0].timestamps_unix_nano[0]"],
    )
    assert "the number 1796454162487453497.5" in response.json()["error"]["message"]


def test_batch_stream_severity_out_of_range(live):
    body = json.dumps(
        {
            "streams": [
                {"service": "range", "messages": ["a"]},
                {"service": "range", "messages": ["b", "c"], "severities": [9, 2**31]},
            ]
        }
    )

    response = _post(live, body)

    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert _error(response) == ("INVALID_FIELD_VALUE", ["streams[1].severities[1]"])
    assert "the number 2147483648" in message
    assert "SEVERITY_WARN = 13" in message


def test_million_empty_streams_rejected(live):
    count = 1_000_000
    body = '{"streams": [' + ",".join(["{}"] * count) + "]}"

    response = _post(live, body, timeout=120)

    assert response.status_code == 400, response.text
    assert _error(response) == ("BATCH_TOO_LARGE", ["streams"])
    assert f"the batch has {count} entries" in response.json()["error"]["message"]


def test_batch_rejection_lists_index_zero(live):
    old = {"service": "index-zero", "message": "old", "timestamp": OLD}
    fresh = {"service": "index-zero", "message": "fresh"}

    response = _post(live, json.dumps({"entries": [old, fresh, old]}))

    assert response.status_code == 200, response.text
    rejected = response.json()["rejectedEntries"]
    assert [rejection["index"] for rejection in rejected] == ["0", "2"]


def test_batch_epoch_timestamp_rejected(live):
    epoch = "1970-01-01T00:00:00Z"
    entries = [{"service": "epoch", "message": "epoch", "timestamp": epoch}]

    response = _post(live, json.dumps({"entries": entries}))

    assert response.status_code == 200, response.text
    assert response.json()["rejectedCount"] == 1
    rejection = response.json()["rejectedEntries"][0]
    assert rejection["reason"] == "REJECTION_REASON_TIMESTAMP_TOO_OLD"
    assert rejection["field"] == "timestamp"
    assert list_all(live.stub, services=["epoch"]) == []


def test_batch_expanding_past_limit_is_413(live):
    # 10,000 copies of an 8 KB attribute: a small body whose entries expand
    # far past max_message_bytes.
    stream = {"service": "huge", "attributes": {"a": "v" * 8000}}
    body = {"streams": [{**stream, "messages": ["s"] * 10_000}]}

    response = _post(live, json.dumps(body))

    assert response.status_code == 413, response.text
    assert "retry-after" not in response.headers
    assert response.json()["error"]["code"] == 413
    assert response.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert _error(response) == ("REQUEST_TOO_LARGE", ["streams[0]"])


@pytest.mark.parametrize(
    ("streams", "field"),
    [
        # The entry with the surrogate comes before the invalid value.
        (
            '{"service": "pos", "messages": ["a", "bad \\ud800", "c"],'
            ' "severities": [9, 9, "LOUD"]}',
            "streams[0].severities[2]",
        ),
        # The stream with the surrogate comes before the invalid value.
        (
            '{"service": "pos \\ud800", "messages": ["a"]},'
            '{"service": "pos", "messages": ["b", "c"], "severities": [9, 2147483648]}',
            "streams[1].severities[1]",
        ),
    ],
)
def test_batch_value_error_names_client_position(live, streams, field):
    response = _post(live, f'{{"streams": [{streams}]}}')

    assert response.status_code == 400, response.text
    assert _error(response) == ("INVALID_FIELD_VALUE", [field])


@pytest.mark.parametrize(
    "column",
    [
        '"severities": [9, "\\ud800", 9]',
        '"timestampsUnixNano": ["\\udfff"]',
        '"severities": [9, "LOUD", 9]',
    ],
)
def test_batch_mismatch_beats_bad_column_value(live, column):
    body = f'{{"streams": [{{"service": "m", "messages": ["a", "b"], {column}}}]}}'

    response = _post(live, body)

    assert response.status_code == 400, response.text
    reason, fields = _error(response)
    assert reason == "COLUMN_LENGTH_MISMATCH"
    assert fields[0].startswith("streams[0].")
    assert "values for 2 messages" in response.json()["error"]["message"]


def test_batch_rejections_of_both_sources_described(live):
    service = f"described-{uuid.uuid4().hex[:8]}"
    # Entry 0 has a lone surrogate in its severity, which the gateway
    # rejects; entries 1 and 2 have unknown severities, which log_service
    # rejects. All three have the same reason and field.
    body = (
        '{"streams": ['
        f'{{"service": "{service}", "messages": ["a", "b", "c", "d"],'
        ' "severities": ["\\ud800", 3, 4, "\\udfff"]}'
        "]}"
    )

    response = _post(live, body)

    assert response.status_code == 200, response.text
    rejected = response.json()["rejectedEntries"]
    assert [int(item.get("index", 0)) for item in rejected] == [0, 1, 2, 3]
    assert {item["field"] for item in rejected} == {"severity"}
    descriptions = [item.get("description", "") for item in rejected]
    assert "\\ud800" in descriptions[0]
    assert "severity 3 is not a known Severity value" in descriptions[1]
    # The first rejection of the reason and field is the gateway's, so
    # log_service's later ones keep its description, and the gateway's own
    # later ones leave it to the first.
    assert descriptions[2] == descriptions[1]
    assert descriptions[3] == ""


def test_large_batch_decoded_off_loop(live):
    # A body over OFF_LOOP_BODY_BYTES is decoded on a worker thread, with
    # the same checks as a small one: the old entry is still rejected.
    service = f"large-{uuid.uuid4().hex[:8]}"
    entries = [
        {"service": service, "message": f"line {i} " + "x" * 60} for i in range(2000)
    ]
    entries[7]["timestamp"] = OLD
    body = json.dumps({"entries": entries})
    assert len(body) > OFF_LOOP_BODY_BYTES

    response = _post(live, body)

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["acceptedCount"] == 1999
    assert [int(item["index"]) for item in result["rejectedEntries"]] == [7]


def test_off_loop_only_for_large_bodies():
    async def thread_ids() -> tuple[int, int, int]:
        small = await run_off_loop_if_large(
            OFF_LOOP_BODY_BYTES - 1, threading.get_ident
        )
        large = await run_off_loop_if_large(OFF_LOOP_BODY_BYTES, threading.get_ident)
        return threading.get_ident(), small, large

    loop_thread, small, large = asyncio.run(thread_ids())

    assert small == loop_thread
    assert large != loop_thread
