"""Page tokens that a client forges from a real one by changing its sort key."""

from __future__ import annotations

import base64
import json
from typing import Any

#: Sort keys that no List method issues: an empty key and one of three
#: strings that are neither dates nor resource names.
FORGED_KEYS = [[], ["x", "y", "z"]]


def with_key(token: str, key: list[Any]) -> str:
    """Return `token` with its sort key replaced and its fingerprint kept."""
    padded = token + "=" * (-len(token) % 4)
    payload = json.loads(base64.urlsafe_b64decode(padded))
    payload["k"] = key
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
