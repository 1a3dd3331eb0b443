"""Bad log write and stats input through REST: a real gateway and log cluster.

A request id over the limit fails `POST /logs` and `POST /logs/batch` with
400 before anything is stored, a request id in the body of `POST /logs`
fails with a hint to send it in the query string, and a histogram step out
of range is printed in exact decimal seconds. A timestamp with an offset
outside -23:59 to +23:59 or a fraction of no digits or more than 9 fails
with 400 rather than being stored at a wrong instant.
"""

from __future__ import annotations

import datetime
import json
import uuid

import httpx
import pytest

from log_service.request_ids import MAX_REQUEST_ID_BYTES
from splitlog.logs.v1 import logs_service_pb2 as logs_pb2
from tests.gateway.test_log_batch import _error
from tests.log_service.test_router_cluster import list_all

LONG_ID = "r" * (MAX_REQUEST_ID_BYTES + 88)


def _url(live, path: str) -> str:
    return f"http://127.0.0.1:{live.gateway.http_port}{path}"


def _post(live, path: str, body: dict, params: dict | None = None) -> httpx.Response:
    return httpx.post(
        _url(live, path),
        content=json.dumps(body).encode(),
        params=params,
        headers={"content-type": "application/json"},
        timeout=10,
    )


def _check_long_id_error(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert _error(response) == ("REQUEST_ID_TOO_LONG", ["request_id"])
    message = response.json()["error"]["message"]
    assert f"is {len(LONG_ID)} bytes long in UTF-8" in message
    assert f"over the limit of {MAX_REQUEST_ID_BYTES} bytes" in message


@pytest.mark.parametrize("key", ["requestId", "request_id"])
def test_batch_rejects_long_request_id(live, key):
    service = f"long-id-{uuid.uuid4().hex[:8]}"
    body = {"entries": [{"service": service, "message": "never stored"}], key: LONG_ID}

    response = _post(live, "/logs/batch", body)

    _check_long_id_error(response)
    assert list_all(live.stub, services=[service]) == []


def test_all_rejected_batch_checks_request_id(live):
    # The gateway rejects an entry with a lone surrogate itself. With no
    # entry left, the request never reaches log_service.
    body = (
        '{"entries": [{"service": "s", "message": "\\udc00"}], '
        f'"requestId": "{LONG_ID}"}}'
    )

    response = httpx.post(
        _url(live, "/logs/batch"),
        content=body.encode(),
        headers={"content-type": "application/json"},
        timeout=10,
    )

    _check_long_id_error(response)


def test_single_write_rejects_long_request_id(live):
    service = f"long-id-one-{uuid.uuid4().hex[:8]}"
    body = {"service": service, "message": "never stored"}

    response = _post(live, "/logs", body, params={"requestId": LONG_ID})

    _check_long_id_error(response)
    assert list_all(live.stub, services=[service]) == []


@pytest.mark.parametrize("key", ["requestId", "request_id"])
def test_single_write_body_request_id_hint(live, key):
    service = f"body-id-{uuid.uuid4().hex[:8]}"
    body = {"service": service, "message": "never stored", key: str(uuid.uuid4())}

    response = _post(live, "/logs", body)
    message = response.json()["error"]["message"]

    assert response.status_code == 400, response.text
    assert _error(response) == ("UNKNOWN_FIELD", [f"entry.{key}"])
    assert f"unknown field {key!r} in splitlog.logs.v1.LogEntry" in message
    assert "POST /logs reads from the query string, not the body" in message
    assert "send it as ?requestId=VALUE" in message
    assert list_all(live.stub, services=[service]) == []


def test_single_write_other_unknown_field(live):
    body = {"service": "s", "message": "never stored", "colour": "red"}

    response = _post(live, "/logs", body)
    message = response.json()["error"]["message"]

    assert response.status_code == 400, response.text
    assert _error(response) == ("UNKNOWN_FIELD", ["entry.colour"])
    assert "query string" not in message


def test_batch_request_id_at_limit_is_stored_once(live):
    service = f"id-at-limit-{uuid.uuid4().hex[:8]}"
    body = {
        "entries": [{"service": service, "message": "once"}],
        "requestId": "k" * MAX_REQUEST_ID_BYTES,
    }

    first = _post(live, "/logs/batch", body)
    second = _post(live, "/logs/batch", body)

    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    assert second.json()["duplicateCount"] == 1
    assert len(list_all(live.stub, services=[service])) == 1


@pytest.mark.parametrize(
    "step, expected",
    [
        ("0.000000001s", "0.000000001s is shorter than the minimum of 1s"),
        ("0.5s", "0.5s is shorter than the minimum of 1s"),
        ("10000000000s", "10000000000s is longer than the maximum"),
        (
            "4611686018.427387905s",
            "longer than the maximum of 4611686018.427387904s (2^62 ns",
        ),
        ("1000000000000s", 'from "-315576000000s" to "315576000000s"'),
    ],
)
def test_stats_step_error_prints_exact_seconds(live, step, expected):
    response = httpx.get(
        _url(live, "/logs/stats"), params={"histogramStep": step}, timeout=10
    )

    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert expected in message
    assert "e-" not in message
    assert "e+" not in message


def test_query_time_plus_as_space_hint(live):
    # An unencoded `+` arrives as a space.
    response = httpx.get(
        _url(live, "/logs") + "?startTime=2017-06-09T22:10:40+02:00", timeout=10
    )

    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert 'got the string "2017-06-09T22:10:40 02:00"' in message
    assert "encode it as %2B (2017-06-09T22:10:40%2B02:00)" in message
    assert "with Z (2017-06-09T20:10:40Z)" in message


def test_query_time_encoded_plus_accepted(live):
    response = httpx.get(
        _url(live, "/logs") + "?startTime=2017-06-09T22:10:40%2B02:00", timeout=10
    )

    assert response.status_code == 200, response.text


def test_stats_longest_step_accepted(live):
    response = httpx.get(
        _url(live, "/logs/stats"),
        params={"histogramStep": "4611686018.427387904s"},
        timeout=10,
    )

    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", ["/logs", "/logs/stats"])
@pytest.mark.parametrize("key", ["attributeConditions.key", "attributeConditions"])
def test_attribute_conditions_query_rejected(live, path, key):
    response = httpx.get(_url(live, path), params={key: "rpc"}, timeout=10)

    assert response.status_code == 400, response.text
    reason, fields = _error(response)
    assert reason == "QUERY_PARAMETER_UNSUPPORTED"
    assert fields[0].startswith("attribute_conditions")
    message = response.json()["error"]["message"]
    assert "cannot be sent as query parameters" in message
    assert "attributeFilters=KEY=VALUE" in message
    assert "expected a JSON array" not in message


def test_enum_with_thousands_of_digits_400(live):
    response = httpx.get(
        _url(live, "/logs"), params={"minSeverity": "1" * 5000}, timeout=10
    )

    assert response.status_code == 400, response.text
    reason, fields = _error(response)
    assert fields == ["min_severity"]


def test_attribute_filter_error_shows_typed_text(live):
    response = httpx.get(
        _url(live, "/logs"), params={"attributeFilters": "a\\x=1"}, timeout=10
    )

    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert "'a\\x=1' has a backslash before 'x'" in message


def test_batch_with_word_like_a_severity_is_stored(live):
    service = f"near-severity-{uuid.uuid4().hex[:8]}"
    messages = ["fine", "DARN it", "EARN: rewards credited", "\u0130NFO x"]
    body = {"entries": [{"service": service, "message": m} for m in messages]}

    response = _post(live, "/logs/batch", body)

    assert response.status_code == 200, response.text
    stored = list_all(live.stub, services=[service])
    assert sorted(entry.message for entry in stored) == sorted(messages)
    assert {entry.severity for entry in stored} == {logs_pb2.SEVERITY_INFO}


def test_retention_policy_etag_header(live):
    response = httpx.get(_url(live, "/v1/retentionPolicy"), timeout=10)

    assert response.status_code == 200, response.text
    etag = response.json()["retentionPolicy"]["etag"]
    assert etag.startswith('"')
    assert response.headers["ETag"] == etag


def test_retention_policy_if_match(live):
    url = _url(live, "/v1/retentionPolicy?updateMask=serviceRetentions")
    body = {"serviceRetentions": {"etag-probe": "172800s"}}
    etag = httpx.get(_url(live, "/v1/retentionPolicy"), timeout=10).headers["ETag"]

    current = httpx.patch(url, json=body, headers={"If-Match": etag}, timeout=10)
    stale = httpx.patch(url, json=body, headers={"If-Match": etag}, timeout=10)

    assert current.status_code == 200, current.text
    assert current.json()["retentionPolicy"]["etag"] != etag
    assert stale.status_code == 409, stale.text
    assert stale.json()["error"]["status"] == "ABORTED"
    reasons = [d.get("reason") for d in stale.json()["error"]["details"]]
    assert "ETAG_MISMATCH" in reasons


def _local_text(utc: datetime.datetime, offset: str) -> str:
    """Write a UTC time as the wall time of an offset such as `+23:59`."""
    sign = -1 if offset[0] == "-" else 1
    hours, minutes = int(offset[1:3]), int(offset[4:6])
    local = utc + sign * datetime.timedelta(hours=hours, minutes=minutes)
    return f"{local:%Y-%m-%dT%H:%M:%S}{offset}"


@pytest.mark.parametrize(
    ("offset", "detail"),
    [
        ("+24:00", "offset +24:00 is out of range"),
        ("+25:00", "offset +25:00 is out of range"),
        ("+99:99", "offset +99:99 is out of range"),
        ("-00:61", "offset -00:61 is out of range"),
        ("+05:60", "offset +05:60 is out of range"),
    ],
)
def test_write_rejects_impossible_offset(live, offset, detail):
    service = f"offset-{uuid.uuid4().hex[:8]}"
    timestamp = _local_text(datetime.datetime.now(datetime.UTC), offset)
    body = {"service": service, "message": "never stored", "timestamp": timestamp}

    response = _post(live, "/logs", body)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert _error(response) == ("INVALID_FIELD_VALUE", ["entry.timestamp"])
    message = response.json()["error"]["message"]
    assert f'got the string "{timestamp}"' in message
    assert detail in message
    assert "Z or an offset from -23:59 to +23:59" in message
    assert list_all(live.stub, services=[service]) == []


@pytest.mark.parametrize(
    ("timestamp", "detail"),
    [
        ("2026-12-06T14:00:00.Z", "the '.' has no digits after it"),
        ("2026-12-06T14:00:00.1234567891Z", "more than 9 digits"),
        ("2026-12-06T14:00:60Z", "second 60 is a leap second"),
        ("2026-12-06T14:00:00+2:00", "expected an RFC 3339 timestamp string"),
        ("0001-01-01T00:00:00+00:01", "outside the range"),
        ("2026-01-01", "add a time and a zone, such as 2026-01-01T00:00:00Z"),
    ],
)
def test_write_rejects_malformed_timestamp(live, timestamp, detail):
    service = f"stamp-{uuid.uuid4().hex[:8]}"
    body = {"service": service, "message": "never stored", "timestamp": timestamp}

    response = _post(live, "/logs", body)

    assert response.status_code == 400, response.text
    assert _error(response) == ("INVALID_FIELD_VALUE", ["entry.timestamp"])
    message = response.json()["error"]["message"]
    assert f'got the string "{timestamp}"' in message
    assert detail in message
    # The accepted form is stated once, not again after the value.
    examples = 2 if "such as" in detail else 1
    assert message.count("such as") == examples
    assert "RFC 3339 time such as" not in message
    assert list_all(live.stub, services=[service]) == []


@pytest.mark.parametrize("offset", ["+23:59", "-23:59", "-00:00", "+05:30"])
def test_write_offset_gives_right_instant(live, offset):
    service = f"offset-ok-{uuid.uuid4().hex[:8]}"
    utc = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    utc -= datetime.timedelta(minutes=5)
    body = {
        "service": service,
        "message": "stored",
        "timestamp": _local_text(utc, offset),
    }

    response = _post(live, "/logs", body)

    assert response.status_code == 200, response.text
    (stored,) = list_all(live.stub, services=[service])
    assert stored.timestamp.seconds == int(utc.timestamp())
    assert stored.timestamp.nanos == 0


def test_write_lower_case_rfc3339_accepted(live):
    service = f"lower-{uuid.uuid4().hex[:8]}"
    utc = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    timestamp = f"{utc:%Y-%m-%dt%H:%M:%S}.000000001z"

    response = _post(live, "/logs", {"service": service, "timestamp": timestamp})

    assert response.status_code == 200, response.text
    (stored,) = list_all(live.stub, services=[service])
    assert stored.timestamp.seconds == int(utc.timestamp())
    assert stored.timestamp.nanos == 1


@pytest.mark.parametrize("path", ["/logs", "/logs/stats"])
@pytest.mark.parametrize("key", ["startTime", "endTime"])
@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("2026-12-06T14:00:00+25:00", "offset +25:00 is out of range"),
        # A `+` that arrived as a space, on an instant before year 1 in UTC.
        (
            "0001-01-01T00:30:00 01:00",
            "0001-01-01T00:30:00+01:00 is outside the range",
        ),
    ],
)
def test_query_time_impossible_offset_rejected(live, path, key, value, detail):
    response = httpx.get(_url(live, path), params={key: value}, timeout=10)

    assert response.status_code == 400, response.text
    field = "start_time" if key == "startTime" else "end_time"
    assert _error(response) == ("INVALID_FIELD_VALUE", [field])
    message = response.json()["error"]["message"]
    assert value in message
    assert detail in message


@pytest.mark.parametrize(
    ("step", "detail"),
    [
        ("1.0000000001s", "more than 9 digits"),
        ("1.s", "the '.' has no digits after it"),
        ("+1s", 'such as "1.5s"'),
        (" 1s", 'such as "1.5s"'),
    ],
)
def test_stats_step_form_rejected(live, step, detail):
    response = httpx.get(
        _url(live, "/logs/stats"), params={"histogramStep": step}, timeout=10
    )

    assert response.status_code == 400, response.text
    assert _error(response) == ("INVALID_FIELD_VALUE", ["histogram_step"])
    message = response.json()["error"]["message"]
    assert json.dumps(step) in message
    assert detail in message
    assert "with 1 to 9 fraction digits" in message


def test_attributes_not_object_message(live):
    body = {"service": "s", "message": "never stored", "attributes": [1, 2]}

    response = _post(live, "/logs", body)

    assert response.status_code == 400, response.text
    assert _error(response) == ("INVALID_FIELD_TYPE", ["entry.attributes"])
    message = response.json()["error"]["message"]
    assert (
        "expected a JSON object with string keys, each value a string, got an "
        "array of 2 items" in message
    )
