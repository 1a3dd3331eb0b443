"""The `--tls`, `--ca-file`, `--cert-file` and `--key-file` flags of the clients.

`splitlog health` and the client commands take them to reach a gateway that
serves TLS. Naming any file implies `--tls`.
"""

from __future__ import annotations

import argparse

from splitlog_runtime.config import Config
from splitlog_runtime.tls import ClientTls


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the TLS flags of a client to `parser`."""
    group = parser.add_argument_group("TLS (for a gateway with tls_cert_file set)")
    group.add_argument(
        "--tls",
        action="store_true",
        help="connect with TLS, trusting the system's root certificates unless "
        "--ca-file names others",
    )
    group.add_argument(
        "--ca-file",
        metavar="FILE",
        help="PEM CA certificates that the server's certificate must chain to; "
        "implies --tls",
    )
    group.add_argument(
        "--cert-file",
        metavar="FILE",
        help="PEM client certificate, for a gateway with tls_client_ca_file set "
        "(mutual TLS); implies --tls and needs --key-file",
    )
    group.add_argument(
        "--key-file",
        metavar="FILE",
        help="PEM private key of --cert-file, without a passphrase",
    )


def client_tls(
    args: argparse.Namespace, config: Config | None = None
) -> ClientTls | None:
    """Return how to connect with TLS per the flags; None means plaintext.

    Args:
      args: parsed arguments that include the flags of `add_tls_arguments`.
      config: resolved settings, if the command has them; a non-empty
        `tls_ca_file` turns TLS on and is the default of `--ca-file`.
    """
    default_ca = config.tls_ca_file if config is not None else ""
    ca_file = args.ca_file or default_ca
    cert_file = args.cert_file or ""
    key_file = args.key_file or ""
    if not (args.tls or ca_file or cert_file or key_file):
        return None
    return ClientTls(ca_file=ca_file, cert_file=cert_file, key_file=key_file)
