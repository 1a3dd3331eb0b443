"""Which client a sign-in lockout counts behind a trusted reverse proxy.

A real user_service runs behind a real gateway with auth on. The REST
front trusts X-Forwarded-For from 127.0.0.1, which stands for a reverse
proxy, and the tests vary the forwarded address: an IPv4-mapped IPv6
address, addresses in one IPv6 /64 network, and text that is not an
address.
"""

from __future__ import annotations

import grpc
import httpx
import pytest

from splitlog_runtime import config as config_module
from tests.auth.support import sign_up_user, users_behind_gateway
from tests.ports import closed_address

PASSWORD = "correct horse battery staple"
WRONG = "not the password 42"
MAX_FAILURES = 3
TIMEOUT = 10.0
SIGN_IN = "/v1/auth:signIn"


def lockout_config(tmp_path_factory, **overrides) -> config_module.Config:
    """Return the settings of a gateway and user_service that lock quickly."""
    return config_module.load(
        environ={},
        overrides={
            "data_dir": tmp_path_factory.mktemp("lockout-clients") / "data",
            "auth_secret": "lockout-clients-secret-" + "c" * 40,
            "auth_signin_max_failures": MAX_FAILURES,
            "grace_seconds": 0.5,
            "workers": 4,
            "expense_service_addr": closed_address(),
            "balance_service_addr": closed_address(),
            "log_service_addr": closed_address(),
            **overrides,
        },
    )


@pytest.fixture(scope="module")
def behind_proxy(tmp_path_factory):
    config = lockout_config(
        tmp_path_factory, auth_required=True, http_trusted_proxies="127.0.0.1"
    )
    with users_behind_gateway(config) as (_, gateway):
        yield gateway


def signed_up_email(gateway) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        signed_up = sign_up_user(channel, "locked", PASSWORD, TIMEOUT)
    return signed_up.user.email


def http_client(gateway, source: str = "127.0.0.1") -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{gateway.http_port}",
        transport=httpx.HTTPTransport(local_address=source),
        timeout=TIMEOUT,
    )


def _sign_in_via(proxy: httpx.Client, email: str, password: str, forwarded: str):
    body = {"email": email, "password": password}
    return proxy.post(SIGN_IN, json=body, headers={"X-Forwarded-For": forwarded})


def _fail_from(proxy: httpx.Client, email: str, clients: list[str]) -> list[int]:
    return [_sign_in_via(proxy, email, WRONG, client).status_code for client in clients]


def test_mapped_ipv6_shares_ipv4_lock(behind_proxy):
    email = signed_up_email(behind_proxy)
    with http_client(behind_proxy) as proxy:
        failures = _fail_from(proxy, email, ["10.1.1.1"] * MAX_FAILURES)
        mapped = _sign_in_via(proxy, email, PASSWORD, "::ffff:10.1.1.1")
        bracketed = _sign_in_via(proxy, email, PASSWORD, "[::ffff:10.1.1.1]:4000")

    assert failures == [401] * MAX_FAILURES
    assert mapped.status_code == 429
    assert bracketed.status_code == 429


def test_ipv6_network_shares_one_lock(behind_proxy):
    email = signed_up_email(behind_proxy)
    addresses = ["2001:db8::1", "2001:DB8::2", "2001:db8:0:0:ffff::3"]
    with http_client(behind_proxy) as proxy:
        failures = _fail_from(proxy, email, addresses)
        same_network = _sign_in_via(proxy, email, PASSWORD, "2001:db8::abcd")
        other_network = _sign_in_via(proxy, email, PASSWORD, "2001:db8:0:1::1")

    assert failures == [401] * MAX_FAILURES
    assert same_network.status_code == 429
    assert other_network.status_code == 200


def test_non_address_counts_as_proxy(behind_proxy):
    email = signed_up_email(behind_proxy)
    entries = ["garbage", "010.001.001.001", "10.1.1.1.1"]
    with http_client(behind_proxy) as proxy:
        failures = _fail_from(proxy, email, entries)
        other_text = _sign_in_via(proxy, email, PASSWORD, "also-garbage")
        proxy_itself = proxy.post(SIGN_IN, json={"email": email, "password": PASSWORD})
        real_client = _sign_in_via(proxy, email, PASSWORD, "10.9.9.9")

    assert failures == [401] * MAX_FAILURES
    assert other_text.status_code == 429
    assert proxy_itself.status_code == 429
    assert real_client.status_code == 200
