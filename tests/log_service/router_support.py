"""Helpers for router tests: statuses, tokens and addresses where nothing listens."""

from __future__ import annotations

import base64
import json

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from log_service.tokens import check_hash


def details_of(error: grpc.RpcError, kind):
    """Return the details of one type from an RPC error's rich status."""
    status = rpc_status.from_call(error)
    found = []
    for detail in status.details if status else []:
        message = kind()
        if detail.Unpack(message):
            found.append(message)
    return found


def violated_fields(error: grpc.RpcError) -> list[str]:
    return [
        violation.field
        for bad in details_of(error, error_details_pb2.BadRequest)
        for violation in bad.field_violations
    ]


def token_payload(token: str) -> dict:
    """Return the JSON payload of a page or resume token."""
    return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


def encode_payload(payload: dict) -> str:
    """Return the page or resume token of a JSON payload, keeping its check hash.

    A payload changed since it was decoded no longer matches its check hash,
    so the router rejects the token as altered.
    """
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def encode_rehashed(payload: dict, kind: str) -> str:
    """Return the token of a JSON payload with a new, matching check hash.

    Such a token passes the check hash, as one built by a caller who read the
    router's code would, so it reaches the router's checks of the content.

    Args:
      kind: "page token" or "resume token".
    """
    return encode_payload({**payload, "h": check_hash(kind, payload)})
