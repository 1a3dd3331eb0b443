"""TLS on the gateway's gRPC and REST fronts, with certificates made per run.

Each module run makes a CA, a server certificate for 127.0.0.1 signed by it,
a client certificate for mutual TLS, and a second CA that signed nothing the
gateway serves. The gateways run on real ports in front of the test backend.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.app import build
from gateway.services import GATEWAY_SERVICE
from splitlog.users.v1 import users_service_pb2 as users_pb2
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_cli.console import address_rows
from splitlog_cli.main import main
from splitlog_runtime.tls import ServerTls, TlsConfigError

SERVING = health_pb2.HealthCheckResponse.SERVING
CALL_TIMEOUT = 3.0


@dataclass(frozen=True)
class Pem:
    """Paths of the PEM files that one test module uses."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    usage: x509.ObjectIdentifier,
    *,
    server: bool,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


@pytest.fixture(scope="module")
def pem(tmp_path_factory) -> Pem:
    folder = tmp_path_factory.mktemp("tls")
    ca_cert, ca_key = _make_ca("splitlog test CA")
    server_cert, server_key = _issue(
        ca_cert, ca_key, "127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH, server=True
    )
    client_cert, client_key = _issue(
        ca_cert, ca_key, "test client", ExtendedKeyUsageOID.CLIENT_AUTH, server=False
    )
    other_ca, _ = _make_ca("unrelated CA")
    return Pem(
        ca=_write_cert(folder / "ca.pem", ca_cert),
        server_cert=_write_cert(folder / "server.pem", server_cert),
        server_key=_write_key(folder / "server.key", server_key),
        client_cert=_write_cert(folder / "client.pem", client_cert),
        client_key=_write_key(folder / "client.key", client_key),
        other_ca=_write_cert(folder / "other-ca.pem", other_ca),
    )


@pytest.fixture(scope="module")
def tls_config(gateway_config, pem):
    return gateway_config.replace(
        tls_cert_file=str(pem.server_cert), tls_key_file=str(pem.server_key)
    )


@pytest.fixture(scope="module")
def tls_gateway(loop_thread, tls_config):
    running = loop_thread.run(build(tls_config, "127.0.0.1:0", "127.0.0.1:0"))
    yield running
    loop_thread.run(running.stop(0))


@pytest.fixture(scope="module")
def mutual_gateway(loop_thread, tls_config, pem):
    config = tls_config.replace(tls_client_ca_file=str(pem.ca))
    running = loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    yield running
    loop_thread.run(running.stop(0))


def _credentials(
    ca: Path, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )


def _get_user(channel: grpc.Channel) -> users_pb2.User:
    stub = users_grpc.UsersServiceStub(channel)
    request = users_pb2.GetUserRequest(name="users/ada")
    return stub.GetUser(request, timeout=CALL_TIMEOUT).user


def _gateway_health(channel: grpc.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=GATEWAY_SERVICE)
    return stub.Check(request, timeout=CALL_TIMEOUT).status


def _trusting(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def test_grpc_with_trusted_ca_works(tls_gateway, pem):
    target = f"127.0.0.1:{tls_gateway.grpc_port}"
    with grpc.secure_channel(target, _credentials(pem.ca)) as channel:
        user = _get_user(channel)
        status = _gateway_health(channel)
    assert user.name == "users/ada"
    assert status == SERVING


def test_grpc_plaintext_channel_fails(tls_gateway):
    target = f"127.0.0.1:{tls_gateway.grpc_port}"
    with (
        grpc.insecure_channel(target) as channel,
        pytest.raises(grpc.RpcError) as raised,
    ):
        _get_user(channel)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_grpc_untrusted_ca_fails(tls_gateway, pem):
    target = f"127.0.0.1:{tls_gateway.grpc_port}"
    channel = grpc.secure_channel(target, _credentials(pem.other_ca))
    with channel, pytest.raises(grpc.RpcError) as raised:
        _get_user(channel)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_rest_over_https_verifies_ca(tls_gateway, pem):
    url = f"https://127.0.0.1:{tls_gateway.http_port}/v1/users/ada"
    response = httpx.get(url, verify=_trusting(pem.ca), timeout=CALL_TIMEOUT)
    assert response.status_code == 200
    assert response.json()["user"]["name"] == "users/ada"


def test_rest_untrusted_ca_fails(tls_gateway, pem):
    url = f"https://127.0.0.1:{tls_gateway.http_port}/v1/users/ada"
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, verify=_trusting(pem.other_ca), timeout=CALL_TIMEOUT)


def test_rest_plain_http_gets_no_answer(tls_gateway):
    url = f"http://127.0.0.1:{tls_gateway.http_port}/v1/users/ada"
    with pytest.raises(httpx.TransportError):
        httpx.get(url, timeout=CALL_TIMEOUT)


def test_mutual_tls_accepts_client_cert(mutual_gateway, pem):
    target = f"127.0.0.1:{mutual_gateway.grpc_port}"
    credentials = _credentials(pem.ca, pem.client_cert, pem.client_key)
    with grpc.secure_channel(target, credentials) as channel:
        user = _get_user(channel)
    assert user.name == "users/ada"


def test_mutual_tls_rejects_missing_cert(mutual_gateway, pem):
    target = f"127.0.0.1:{mutual_gateway.grpc_port}"
    channel = grpc.secure_channel(target, _credentials(pem.ca))
    with channel, pytest.raises(grpc.RpcError) as raised:
        _get_user(channel)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_rest_with_cert(mutual_gateway, pem):
    url = f"https://127.0.0.1:{mutual_gateway.http_port}/v1/users/ada"
    context = _trusting(pem.ca)
    context.load_cert_chain(pem.client_cert, pem.client_key)
    response = httpx.get(url, verify=context, timeout=CALL_TIMEOUT)
    assert response.status_code == 200


def test_mutual_tls_rest_without_cert(mutual_gateway, pem):
    url = f"https://127.0.0.1:{mutual_gateway.http_port}/v1/users/ada"
    with pytest.raises(httpx.TransportError):
        httpx.get(url, verify=_trusting(pem.ca), timeout=CALL_TIMEOUT)


def test_health_command_with_ca_file(tls_gateway, pem, capsys):
    address = f"127.0.0.1:{tls_gateway.grpc_port}"
    status = main(["health", address, GATEWAY_SERVICE, "--ca-file", str(pem.ca)])
    assert status == 0
    assert capsys.readouterr().out.strip() == "SERVING"


def test_health_command_without_tls_fails(tls_gateway, capsys):
    address = f"127.0.0.1:{tls_gateway.grpc_port}"
    status = main(["health", address, GATEWAY_SERVICE, "--timeout", "1"])
    assert status == 1
    # The gateway runs in this process, so its own log lines may come first.
    error = capsys.readouterr().err.splitlines()
    assert "UNAVAILABLE" in error
    hint = error[error.index("UNAVAILABLE") + 1]
    assert "--tls" in hint


def test_health_command_missing_ca_file(tls_gateway, tmp_path, capsys):
    address = f"127.0.0.1:{tls_gateway.grpc_port}"
    missing = tmp_path / "nowhere.pem"
    status = main(["health", address, "--ca-file", str(missing)])
    assert status == 2
    error = capsys.readouterr().err
    assert "--ca-file" in error
    assert str(missing) in error


def test_client_command_over_tls(tls_gateway, pem, capsys, monkeypatch):
    monkeypatch.delenv("SPLITLOG_TLS_CA_FILE", raising=False)
    gateway_flag = ["--gateway", f"127.0.0.1:{tls_gateway.grpc_port}"]
    status = main(
        ["users", "get", "ada", *gateway_flag, "--format", "json"]
        + ["--ca-file", str(pem.ca)]
    )
    assert status == 0
    assert '"users/ada"' in capsys.readouterr().out


def test_client_command_with_mutual_tls(mutual_gateway, pem, capsys):
    gateway_flag = ["--gateway", f"127.0.0.1:{mutual_gateway.grpc_port}"]
    tls_flags = ["--ca-file", str(pem.ca)]
    tls_flags += ["--cert-file", str(pem.client_cert)]
    tls_flags += ["--key-file", str(pem.client_key)]
    status = main(["users", "get", "ada", *gateway_flag, *tls_flags])
    assert status == 0
    assert "users/ada" in capsys.readouterr().out


def test_client_command_untrusted_names_tls(tls_gateway, pem, capsys):
    gateway_flag = ["--gateway", f"127.0.0.1:{tls_gateway.grpc_port}"]
    status = main(
        ["users", "get", "ada", *gateway_flag, "--ca-file", str(pem.other_ca)]
    )
    assert status == 1
    error = capsys.readouterr().err
    assert "over TLS" in error
    assert "--ca-file" in error


def test_client_command_plaintext_hints_tls(tls_gateway, capsys):
    gateway_flag = ["--gateway", f"127.0.0.1:{tls_gateway.grpc_port}"]
    status = main(["users", "get", "ada", *gateway_flag])
    assert status == 1
    assert "--tls" in capsys.readouterr().err


def test_ready_rows_show_https(tls_config, gateway_config):
    ports = {"gateway": 50051, "http": 8080}
    tls_rows = dict(address_rows(tls_config, ports))
    plain_rows = dict(address_rows(gateway_config, ports))
    assert tls_rows["gateway (REST)"] == "https://127.0.0.1:8080"
    assert plain_rows["gateway (REST)"] == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"tls_cert_file": "missing.pem"}, "tls_key_file is empty"),
        ({"tls_key_file": "missing.key"}, "tls_cert_file is empty"),
        ({"tls_client_ca_file": "ca.pem"}, "tls_client_ca_file is set but TLS"),
    ],
)
def test_settings_must_come_in_pairs(gateway_config, changes, expected):
    with pytest.raises(TlsConfigError, match=expected):
        ServerTls.from_config(gateway_config.replace(**changes))


def test_startup_missing_cert_names_setting(loop_thread, gateway_config, pem, tmp_path):
    missing = tmp_path / "absent.pem"
    config = gateway_config.replace(
        tls_cert_file=str(missing), tls_key_file=str(pem.server_key)
    )
    with pytest.raises(TlsConfigError) as raised:
        loop_thread.run(build(config, "127.0.0.1:0", "127.0.0.1:0"))
    message = str(raised.value)
    assert message.startswith("tls_cert_file:")
    assert str(missing) in message


def test_startup_unreadable_key_names_setting(gateway_config, pem, tmp_path):
    # A directory replaces an unreadable file, because tests may run as root.
    config = gateway_config.replace(
        tls_cert_file=str(pem.server_cert), tls_key_file=str(tmp_path)
    )
    with pytest.raises(TlsConfigError, match="^tls_key_file: cannot read"):
        ServerTls.from_config(config)


def test_startup_key_of_other_cert_fails(gateway_config, pem):
    config = gateway_config.replace(
        tls_cert_file=str(pem.server_cert), tls_key_file=str(pem.client_key)
    )
    with pytest.raises(TlsConfigError, match="key belongs to the certificate"):
        ServerTls.from_config(config)


def test_startup_key_as_cert_fails(gateway_config, pem):
    config = gateway_config.replace(
        tls_cert_file=str(pem.server_key), tls_key_file=str(pem.server_key)
    )
    with pytest.raises(TlsConfigError, match="^tls_cert_file: .* no PEM certificate"):
        ServerTls.from_config(config)


def test_startup_encrypted_key_fails(gateway_config, pem, tmp_path):
    key = serialization.load_pem_private_key(pem.server_key.read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret passphrase"),
        )
    )
    config = gateway_config.replace(
        tls_cert_file=str(pem.server_cert), tls_key_file=str(encrypted)
    )
    with pytest.raises(TlsConfigError, match="encrypted with a passphrase"):
        ServerTls.from_config(config)


def test_startup_bad_client_ca_fails(gateway_config, pem):
    config = gateway_config.replace(
        tls_cert_file=str(pem.server_cert),
        tls_key_file=str(pem.server_key),
        tls_client_ca_file=str(pem.server_key),
    )
    with pytest.raises(TlsConfigError, match="^tls_client_ca_file: "):
        ServerTls.from_config(config)
