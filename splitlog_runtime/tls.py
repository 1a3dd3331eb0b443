"""TLS for the gateway's external ports, and TLS channels to the gateway.

The settings `tls_cert_file` and `tls_key_file` turn TLS on; both empty is
plaintext, the default. `tls_client_ca_file` also requires each client to
present a certificate that chains to one of its CA certificates (mutual TLS).

`ServerTls.from_config` reads and checks the files once, at startup, so a
missing, unreadable or mismatched file stops the gateway with a message that
names the setting. The same bytes then serve gRPC (`server_credentials`) and
uvicorn (`uvicorn_options`).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from splitlog_runtime import auth
from splitlog_runtime.channels import channel_options
from splitlog_runtime.config import Config

_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


class TlsConfigError(ValueError):
    """A TLS setting names a file that is missing, unreadable or not valid PEM."""


class _EncryptedKey(Exception):
    """Raised by the password callback: the private key needs a passphrase."""


def _never_a_password() -> bytes:
    raise _EncryptedKey


def read_pem(setting: str, path: str, *, certificates: bool) -> bytes:
    """Read a PEM file named by a setting or flag.

    Args:
      setting: the setting or flag that names the file, for the error message.
      path: the file path.
      certificates: whether the file must contain at least one certificate.

    Raises:
      TlsConfigError: the file is missing, unreadable, or has no certificate
        when one is expected.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise TlsConfigError(
            f"{setting}: file {path!r} does not exist; set {setting} to the path "
            "of a PEM file, or leave it empty"
        ) from None
    except OSError as exc:
        raise TlsConfigError(
            f"{setting}: cannot read {path!r} ({exc.strerror or exc}); check the "
            "path and its permissions"
        ) from None
    if certificates and _PEM_CERTIFICATE not in data:
        raise TlsConfigError(
            f"{setting}: {path!r} contains no PEM certificate (a "
            f"'{_PEM_CERTIFICATE.decode()}' block); point {setting} at a PEM file"
        )
    return data


@dataclass(frozen=True)
class ServerTls:
    """The files that make the gateway's fronts serve TLS, read and checked.

    Attributes:
      cert_file: path of the PEM certificate chain, leaf first.
      key_file: path of the PEM private key of the leaf certificate.
      client_ca_file: path of the PEM CA certificates that client
        certificates must chain to; empty means no client certificate is
        requested.
      cert_chain: contents of `cert_file`.
      private_key: contents of `key_file`.
      client_ca: contents of `client_ca_file`, or None.
    """

    cert_file: str
    key_file: str
    client_ca_file: str
    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None

    @property
    def mutual(self) -> bool:
        """Whether clients must present a certificate."""
        return self.client_ca is not None

    @classmethod
    def from_config(cls, config: Config) -> ServerTls | None:
        """Read the TLS files that the settings name; None means plaintext.

        Raises:
          TlsConfigError: only one of tls_cert_file and tls_key_file is set,
            tls_client_ca_file is set without them, a file is missing or
            unreadable, or the key does not belong to the certificate.
        """
        cert_file = config.tls_cert_file
        key_file = config.tls_key_file
        client_ca_file = config.tls_client_ca_file
        if not cert_file and not key_file:
            if client_ca_file:
                raise TlsConfigError(
                    "tls_client_ca_file is set but TLS is off; set tls_cert_file "
                    "and tls_key_file too, or clear tls_client_ca_file"
                )
            return None
        if not cert_file or not key_file:
            missing = "tls_cert_file" if not cert_file else "tls_key_file"
            present = "tls_key_file" if not cert_file else "tls_cert_file"
            raise TlsConfigError(
                f"{missing} is empty but {present} is set; TLS needs both a "
                "certificate and its private key, so set both or neither"
            )
        cert_chain = read_pem("tls_cert_file", cert_file, certificates=True)
        private_key = read_pem("tls_key_file", key_file, certificates=False)
        _check_key_pair(cert_file, key_file)
        client_ca = None
        if client_ca_file:
            client_ca = read_pem(
                "tls_client_ca_file", client_ca_file, certificates=True
            )
            _check_ca_file("tls_client_ca_file", client_ca_file)
        return cls(
            cert_file, key_file, client_ca_file, cert_chain, private_key, client_ca
        )

    def server_credentials(self) -> grpc.ServerCredentials:
        """Return the credentials of a gRPC port that serves TLS."""
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.mutual,
        )

    def uvicorn_options(self) -> dict[str, Any]:
        """Return the keyword arguments of `uvicorn.Config` that turn on TLS."""
        options: dict[str, Any] = {
            "ssl_certfile": self.cert_file,
            "ssl_keyfile": self.key_file,
        }
        if self.mutual:
            options["ssl_ca_certs"] = self.client_ca_file
            options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
        return options


def _check_key_pair(cert_file: str, key_file: str) -> None:
    """Load the pair as OpenSSL will, so a bad pair fails at startup, not per call."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file, password=_never_a_password)
    except _EncryptedKey:
        raise TlsConfigError(
            f"tls_key_file: {key_file!r} is encrypted with a passphrase; gRPC "
            "cannot use it, so write the key without a passphrase (e.g. "
            "`openssl pkey -in KEY -out KEY.plain`) and keep that file mode 0600"
        ) from None
    except ssl.SSLError as exc:
        raise TlsConfigError(
            f"tls_cert_file {cert_file!r} and tls_key_file {key_file!r} do not "
            f"load as a certificate and its private key ({exc.reason or exc}); "
            "check that both are PEM and that the key belongs to the certificate"
        ) from None


def _check_ca_file(setting: str, path: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise TlsConfigError(
            f"{setting}: {path!r} does not load as PEM CA certificates "
            f"({exc.reason or exc}); point {setting} at a PEM file"
        ) from None


@dataclass(frozen=True)
class ClientTls:
    """The CA and client certificate files of a client of a TLS gateway.

    Attributes:
      ca_file: PEM CA certificates that the gateway's certificate must chain
        to; empty means the system's trusted roots.
      cert_file: PEM client certificate for mutual TLS; empty means none.
      key_file: PEM private key of `cert_file`.
    """

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Read the files and return the credentials of a TLS channel.

        Raises:
          TlsConfigError: a file is missing or unreadable, or only one of the
            client certificate and its key is given.
        """
        if bool(self.cert_file) != bool(self.key_file):
            raise TlsConfigError(
                "--cert-file and --key-file go together; pass both for mutual "
                "TLS, or neither"
            )
        root = None
        if self.ca_file:
            root = read_pem("--ca-file", self.ca_file, certificates=True)
        chain = key = None
        if self.cert_file:
            chain = read_pem("--cert-file", self.cert_file, certificates=True)
            key = read_pem("--key-file", self.key_file, certificates=False)
        return grpc.ssl_channel_credentials(
            root_certificates=root, private_key=key, certificate_chain=chain
        )


def secure_channel(
    target: str,
    credentials: grpc.ChannelCredentials,
    max_message_bytes: int = 16 * 1024 * 1024,
) -> grpc.Channel:
    """Open a sync TLS channel with the options of the component channels.

    Like `channels.insecure_channel`, its calls carry the process's principal
    signature once a component with `auth_required` has started.
    """
    channel = grpc.secure_channel(
        target, credentials, options=channel_options(max_message_bytes)
    )
    return auth.signing_channel(channel)
