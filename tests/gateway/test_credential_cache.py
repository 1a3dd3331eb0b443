"""The credential cache on its own, with a check function in place of user_service.

The end-to-end behaviour, against a real user_service and gateway, is in
tests/auth/test_credential_cache.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.credential_cache import CredentialCache
from splitlog.auth.v1 import credential_service_pb2 as cred_pb
from splitlog_runtime.errors import Unauthenticated


class _Checks:
    """A stand-in for CheckCredential: returns `users/{credential}`, counts calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.gate: asyncio.Event | None = None
        self.expire_time: float | None = None

    async def __call__(self, credential: str) -> cred_pb.CheckCredentialResponse:
        self.calls.append(credential)
        if self.gate is not None:
            await self.gate.wait()
        if credential.startswith("bad"):
            raise Unauthenticated("the credential is not valid")
        reply = cred_pb.CheckCredentialResponse(principal=f"users/{credential}")
        if self.expire_time is not None:
            reply.expire_time.FromNanoseconds(int(self.expire_time * 1e9))
        return reply


def test_least_recently_used_dropped_first():
    async def run():
        cache, checks = CredentialCache(600, max_entries=2), _Checks()
        for credential in ["a", "b", "a", "c", "a", "b"]:
            await cache.check(credential, checks)
        return checks.calls, len(cache)

    calls, size = asyncio.run(run())
    # "b" was the least recently used when "c" came, so only it is asked again.
    assert calls == ["a", "b", "c", "b"]
    assert size == 2


def test_failed_check_not_kept():
    async def run():
        cache, checks = CredentialCache(600), _Checks()
        for _ in range(2):
            with pytest.raises(Unauthenticated):
                await cache.check("bad", checks)
        return checks.calls, len(cache)

    assert asyncio.run(run()) == (["bad", "bad"], 0)


def test_check_during_revocation_not_kept():
    async def run():
        cache, checks = CredentialCache(600), _Checks()
        checks.gate = asyncio.Event()
        running = asyncio.ensure_future(cache.check("a", checks))
        await asyncio.sleep(0)
        cache.forget_user("users/someone-else")
        checks.gate.set()
        first = await running
        second = await cache.check("a", checks)
        return first.principal, second.principal, checks.calls

    assert asyncio.run(run()) == ("users/a", "users/a", ["a", "a"])


def test_cancelled_caller_keeps_shared_check():
    async def run():
        cache, checks = CredentialCache(600), _Checks()
        checks.gate = asyncio.Event()
        first = asyncio.ensure_future(cache.check("a", checks))
        second = asyncio.ensure_future(cache.check("a", checks))
        await asyncio.sleep(0)
        first.cancel()
        checks.gate.set()
        checked = await second
        await cache.check("a", checks)
        return first.cancelled(), checked.principal, checks.calls

    assert asyncio.run(run()) == (True, "users/a", ["a"])


def test_expired_credential_not_kept():
    async def run():
        cache, checks = CredentialCache(600), _Checks()
        checks.expire_time = time.time() - 1
        await cache.check("a", checks)
        await cache.check("a", checks)
        return checks.calls

    assert asyncio.run(run()) == ["a", "a"]


def test_forget_user_drops_one_user():
    async def run():
        cache, checks = CredentialCache(600), _Checks()
        for credential in ["ana", "ana/apiKeys/k1", "bo"]:
            await cache.check(credential, checks)
        cache.forget_user("users/ana")
        for credential in ["ana", "ana/apiKeys/k1", "bo"]:
            await cache.check(credential, checks)
        return checks.calls

    calls = asyncio.run(run())
    assert calls == ["ana", "ana/apiKeys/k1", "bo", "ana", "ana/apiKeys/k1"]
