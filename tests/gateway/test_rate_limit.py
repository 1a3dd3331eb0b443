"""Rate limits per principal and the concurrent call cap at the gateway.

Each test that needs a gateway starts its own, so that token buckets and
running calls of one test never reach another.
"""

from __future__ import annotations

import time

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway import limits
from gateway.app import build
from gateway.limits import RateLimiter, TokenBucket, peer_host, rate_limit_key
from splitlog.users.v1 import users_service_pb2 as pb
from splitlog.users.v1 import users_service_pb2_grpc as pb_grpc
from splitlog_runtime import auth
from splitlog_runtime import config as config_module
from splitlog_runtime.server import create_server
from tests.gateway.support import (
    USERS_SERVICE,
    BackendLog,
    UsersBackend,
    error_details,
    start_backend,
)
from tests.ports import closed_address

# One token per second: a burst of calls never gets a new token before it
# ends, even on a slow machine.
RATE = 1.0
BURST = 3
CALL_TIMEOUT = 5.0
GET_USER_PATH = "/v1/users/ada"


class FakeClock:
    """A monotonic clock that moves only when a test advances `now`."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# Token buckets on their own


def test_bucket_starts_full_then_empties():
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)


def test_bucket_delay_counts_partial_token():
    bucket = TokenBucket(rate=2.0, burst=1, now=0.0)
    assert bucket.take(0.0) == 0.0
    assert bucket.take(0.2) == pytest.approx(0.3)


def test_bucket_refills_at_most_to_burst():
    bucket = TokenBucket(rate=10.0, burst=2, now=0.0)
    for _ in range(2):
        bucket.take(0.0)
    assert bucket.take(3600.0) == 0.0
    assert bucket.take(3600.0) == 0.0
    assert bucket.take(3600.0) > 0


def test_limiter_recovers_after_delay():
    clock = FakeClock()
    limiter = RateLimiter(RATE, BURST, clock=clock)
    for _ in range(BURST):
        assert limiter.acquire("users/ada") == 0.0
    delay = limiter.acquire("users/ada")
    assert delay == pytest.approx(1 / RATE)
    clock.now += delay
    assert limiter.acquire("users/ada") == 0.0


def test_limiter_keys_apart():
    limiter = RateLimiter(RATE, 1, clock=FakeClock())
    assert limiter.acquire("users/ada") == 0.0
    assert limiter.acquire("users/ada") > 0
    assert limiter.acquire("users/ada/apiKeys/k1") == 0.0
    assert limiter.acquire("peer/127.0.0.1") == 0.0


def test_limiter_drops_least_recent_key():
    limiter = RateLimiter(RATE, 1, max_keys=2, clock=FakeClock())
    limiter.acquire("a")
    limiter.acquire("b")
    limiter.acquire("a")
    limiter.acquire("c")
    assert len(limiter) == 2
    # "b" was dropped, so it starts again with a full bucket; "a" was kept.
    assert limiter.acquire("b") == 0.0
    assert limiter.acquire("c") > 0


def test_limiter_check_names_settings():
    limiter = RateLimiter(RATE, 1, clock=FakeClock())
    limiter.check("users/ada")
    with pytest.raises(limits.ResourceExhausted) as caught:
        limiter.check("users/ada")
    message = caught.value.message
    assert "gateway_rate_limit_per_second" in message
    assert "gateway_rate_limit_burst" in message
    assert "users/ada" in message
    assert caught.value.retry_delay == pytest.approx(1 / RATE)


@pytest.mark.parametrize(
    ("rate", "burst", "setting"),
    [
        (-1.0, 10, "gateway_rate_limit_per_second"),
        (float("inf"), 10, "gateway_rate_limit_per_second"),
        (5.0, 0, "gateway_rate_limit_burst"),
    ],
)
def test_limiter_rejects_bad_settings(rate, burst, setting):
    with pytest.raises(ValueError, match=setting):
        RateLimiter(rate, burst)


def test_limiter_off_at_rate_zero():
    assert limits.limiter_from_config(0.0, 0) is None


def test_concurrency_limit_rejects_bad_setting():
    with pytest.raises(ValueError, match="max_concurrent_rpcs"):
        limits.ConcurrencyLimit(-1)


def test_key_of_principal_or_peer():
    user = auth.Principal("users/ada")
    key = auth.Principal("users/ada/apiKeys/k1", frozenset({"admin"}))
    anonymous = auth.Principal("anonymous")
    assert rate_limit_key(user, "10.0.0.1") == "users/ada"
    assert rate_limit_key(key, "10.0.0.1") == "users/ada/apiKeys/k1"
    assert rate_limit_key(anonymous, "10.0.0.1") == "peer/10.0.0.1"
    assert rate_limit_key(None, "10.0.0.1") == "peer/10.0.0.1"
    assert rate_limit_key(None, "") == "peer/unknown"
    assert rate_limit_key(None, "2001:db8::7") == "peer/2001:db8::/64"
    assert rate_limit_key(None, "::ffff:10.0.0.1") == "peer/10.0.0.1"


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:127.0.0.1:50000", "127.0.0.1"),
        ("ipv6:[::1]:50000", "::1"),
        ("ipv6:%5B::1%5D:50000", "::1"),
        ("ipv6:%5B2001:DB8::0:1%5D:50000", "2001:db8::1"),
        ("ipv6:%5B::ffff:10.1.1.1%5D:50000", "10.1.1.1"),
        ("unix:/tmp/socket", "unix:/tmp/socket"),
    ],
)
def test_peer_host_drops_port(peer, host):
    assert peer_host(peer) == host


# A running gateway


@pytest.fixture(scope="module")
def backend_log() -> BackendLog:
    return BackendLog()


@pytest.fixture(scope="module")
def backend(backend_log):
    host = start_backend(backend_log)
    yield host
    host.stop(0)


def _config(backend, tmp_path, **overrides):
    address = f"127.0.0.1:{backend.port}"
    return config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path,
            "user_service_addr": address,
            "log_service_addr": address,
            "expense_service_addr": closed_address(),
            "balance_service_addr": closed_address(),
            "deadline_seconds": CALL_TIMEOUT,
            "grace_seconds": 0.5,
            **overrides,
        },
    )


@pytest.fixture
def start_gateway(loop_thread, backend, tmp_path):
    started = []

    def start(**overrides):
        config = _config(backend, tmp_path, **overrides)
        gateway = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        loop_thread.run(gateway.stop(0))


@pytest.fixture
def limited(start_gateway):
    return start_gateway(
        gateway_rate_limit_per_second=RATE, gateway_rate_limit_burst=BURST
    )


def _users_stub(gateway) -> tuple[grpc.Channel, pb_grpc.UsersServiceStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")
    return channel, pb_grpc.UsersServiceStub(channel)


def _get_user(stub: pb_grpc.UsersServiceStub, name: str = "users/ada"):
    return stub.GetUser(pb.GetUserRequest(name=name), timeout=CALL_TIMEOUT)


def _retry_delay(error: grpc.RpcError) -> float:
    delay = error_details(error)["RetryInfo"].retry_delay
    return delay.seconds + delay.nanos / 1e9


def _http_client(gateway, local_address: str = "127.0.0.1") -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=local_address)
    return httpx.Client(
        base_url=f"http://127.0.0.1:{gateway.http_port}",
        transport=transport,
        timeout=CALL_TIMEOUT,
    )


def test_grpc_burst_then_retry_info(limited):
    channel, stub = _users_stub(limited)
    with channel:
        for _ in range(BURST):
            assert _get_user(stub).user.name == "users/ada"
        with pytest.raises(grpc.RpcError) as caught:
            _get_user(stub)
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "gateway_rate_limit_per_second" in error.details()
    assert "peer/127.0.0.1" in error.details()
    assert error_details(error)["ErrorInfo"].reason == "RATE_LIMIT_EXCEEDED"
    delay = _retry_delay(error)
    assert 0 < delay <= 1 / RATE


def test_grpc_recovers_after_delay(limited):
    channel, stub = _users_stub(limited)
    with channel:
        for _ in range(BURST):
            _get_user(stub)
        with pytest.raises(grpc.RpcError) as caught:
            _get_user(stub)
        time.sleep(_retry_delay(caught.value))
        assert _get_user(stub).user.name == "users/ada"


def test_health_exempt_from_rate_limit(limited):
    with grpc.insecure_channel(f"127.0.0.1:{limited.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(BURST * 3):
            reply = health.Check(
                health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT
            )
            assert reply.status in (
                health_pb2.HealthCheckResponse.SERVING,
                health_pb2.HealthCheckResponse.NOT_SERVING,
            )


def test_rest_burst_then_429(limited):
    with _http_client(limited) as client:
        for _ in range(BURST):
            assert client.get(GET_USER_PATH).status_code == 200
        response = client.get(GET_USER_PATH)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    error = response.json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert "gateway_rate_limit_per_second" in error["message"]
    types = {detail["@type"].rsplit("/", 1)[-1] for detail in error["details"]}
    assert "google.rpc.RetryInfo" in types


def test_rest_recovers_after_delay(limited):
    with _http_client(limited) as client:
        for _ in range(BURST):
            client.get(GET_USER_PATH)
        response = client.get(GET_USER_PATH)
        assert response.status_code == 429
        retry = next(
            detail
            for detail in response.json()["error"]["details"]
            if detail["@type"].endswith("google.rpc.RetryInfo")
        )
        time.sleep(float(retry["retryDelay"].removesuffix("s")))
        assert client.get(GET_USER_PATH).status_code == 200


def test_rest_and_grpc_share_peer_bucket(limited):
    with _http_client(limited) as client:
        for _ in range(BURST):
            assert client.get(GET_USER_PATH).status_code == 200
    channel, stub = _users_stub(limited)
    with channel, pytest.raises(grpc.RpcError) as caught:
        _get_user(stub)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_peers_keyed_apart(limited):
    with _http_client(limited, "127.0.0.1") as first:
        for _ in range(BURST):
            first.get(GET_USER_PATH)
        assert first.get(GET_USER_PATH).status_code == 429
    with _http_client(limited, "127.0.0.2") as second:
        response = second.get(GET_USER_PATH)
    assert response.status_code == 200


def _forwarded_for(address: str) -> dict[str, str]:
    return {"x-forwarded-for": address}


def _rotate_forwarded_for(client: httpx.Client) -> httpx.Response:
    """Make one call more than the burst, each with another X-Forwarded-For.

    Returns the last response.
    """
    for number in range(BURST):
        headers = _forwarded_for(f"203.0.113.{number + 1}")
        assert client.get(GET_USER_PATH, headers=headers).status_code == 200
    return client.get(GET_USER_PATH, headers=_forwarded_for("203.0.113.99"))


def test_forwarded_for_ignored_by_default(limited):
    # Any local process could rotate the header to get a fresh bucket.
    with _http_client(limited) as client:
        response = _rotate_forwarded_for(client)
    assert response.status_code == 429
    assert "peer/127.0.0.1" in response.json()["error"]["message"]


def test_trusted_proxy_forwards_client(start_gateway):
    gateway = start_gateway(
        gateway_rate_limit_per_second=RATE,
        gateway_rate_limit_burst=BURST,
        http_trusted_proxies="127.0.0.1",
    )
    client_address = _forwarded_for("203.0.113.7")
    with _http_client(gateway) as proxy:
        for _ in range(BURST):
            assert proxy.get(GET_USER_PATH, headers=client_address).status_code == 200
        limited = proxy.get(GET_USER_PATH, headers=client_address)
        other_client = proxy.get(GET_USER_PATH, headers=_forwarded_for("203.0.113.8"))
    assert limited.status_code == 429
    assert "peer/203.0.113.7" in limited.json()["error"]["message"]
    assert other_client.status_code == 200


def test_untrusted_address_header_ignored(start_gateway):
    gateway = start_gateway(
        gateway_rate_limit_per_second=RATE,
        gateway_rate_limit_burst=BURST,
        http_trusted_proxies="127.0.0.1",
    )
    with _http_client(gateway, "127.0.0.2") as client:
        response = _rotate_forwarded_for(client)
    assert response.status_code == 429
    assert "peer/127.0.0.2" in response.json()["error"]["message"]


def test_no_limit_by_default(start_gateway):
    gateway = start_gateway()
    channel, stub = _users_stub(gateway)
    with channel:
        for _ in range(BURST * 5):
            _get_user(stub)


# Concurrent calls


def test_gateway_concurrency_cap(start_gateway, backend_log):
    gateway = start_gateway(max_concurrent_rpcs=1)
    backend_log.hanging.clear()
    channel, stub = _users_stub(gateway)
    with channel:
        hanging = stub.GetUser.future(
            pb.GetUserRequest(name="users/hang"), timeout=CALL_TIMEOUT
        )
        assert backend_log.hanging.wait(CALL_TIMEOUT)
        with pytest.raises(grpc.RpcError) as caught:
            _get_user(stub)
        with _http_client(gateway) as client:
            response = client.get(GET_USER_PATH)
        hanging.cancel()
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_concurrent_rpcs" in error.details()
    assert error_details(error)["ErrorInfo"].reason == "TOO_MANY_CONCURRENT_CALLS"
    assert _retry_delay(error) > 0
    assert response.status_code == 429
    assert "max_concurrent_rpcs" in response.json()["error"]["message"]
    assert "retry-after" in response.headers


def _hang_one_call(stub, backend_log):
    backend_log.hanging.clear()
    hanging = stub.GetUser.future(
        pb.GetUserRequest(name="users/hang"), timeout=CALL_TIMEOUT
    )
    assert backend_log.hanging.wait(CALL_TIMEOUT)
    return hanging


def test_gateway_cap_counts_reflection(start_gateway, backend_log):
    gateway = start_gateway(max_concurrent_rpcs=1)
    channel, stub = _users_stub(gateway)
    with channel:
        hanging = _hang_one_call(stub, backend_log)
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as caught:
            list(reflection.ServerReflectionInfo(iter([request]), timeout=CALL_TIMEOUT))
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT
        )
        hanging.cancel()
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_concurrent_rpcs" in caught.value.details()
    # Health is exempt from the cap, so it returns a status either way.
    assert health.status in (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )


def test_gateway_cap_with_rate_limit(start_gateway, backend_log):
    gateway = start_gateway(
        max_concurrent_rpcs=1,
        gateway_rate_limit_per_second=RATE,
        gateway_rate_limit_burst=BURST,
    )
    channel, stub = _users_stub(gateway)
    with channel:
        hanging = _hang_one_call(stub, backend_log)
        with pytest.raises(grpc.RpcError) as caught:
            _get_user(stub)
        hanging.cancel()
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_details(error)["ErrorInfo"].reason == "TOO_MANY_CONCURRENT_CALLS"


def test_gateway_cap_frees_after_call(start_gateway):
    gateway = start_gateway(max_concurrent_rpcs=1)
    channel, stub = _users_stub(gateway)
    with channel:
        for _ in range(3):
            assert _get_user(stub).user.name == "users/ada"
    with _http_client(gateway) as client:
        for _ in range(3):
            assert client.get(GET_USER_PATH).status_code == 200


def test_service_concurrency_cap():
    log = BackendLog()

    def register(server: grpc.Server) -> None:
        pb_grpc.add_UsersServiceServicer_to_server(UsersBackend(log), server)

    host = create_server(
        "capped_backend",
        [register],
        [USERS_SERVICE],
        workers=4,
        max_concurrent_rpcs=1,
        reflection_enabled=False,
    )
    host.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            stub = pb_grpc.UsersServiceStub(channel)
            hanging = stub.GetUser.future(
                pb.GetUserRequest(name="users/hang"), timeout=CALL_TIMEOUT
            )
            assert log.hanging.wait(CALL_TIMEOUT)
            with pytest.raises(grpc.RpcError) as caught:
                _get_user(stub)
            hanging.cancel()
    finally:
        host.stop(0)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The gateway recognises this exact message to name the setting.
    assert caught.value.details() == limits.GRPC_CONCURRENCY_MESSAGE


def test_backend_cap_named_by_gateway(limited):
    status = limited.pool.translate_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        limits.GRPC_CONCURRENCY_MESSAGE,
        (),
        f"/{USERS_SERVICE}/GetUser",
    )
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_concurrent_rpcs" in status.details
    assert "user_service" in status.details


def test_other_exhaustion_passes_unchanged(limited):
    status = limited.pool.translate_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "quota of the test backend",
        (),
        f"/{USERS_SERVICE}/GetUser",
    )
    assert status.details == "quota of the test backend"
