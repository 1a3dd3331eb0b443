"""The same expense workload against splitlog and against ihatemoney 7.2.1.

Both run on this machine in the same run. ihatemoney runs from PyPI under
gunicorn with 2 workers and SQLite, and is called over its REST API with a
bearer token. splitlog runs with `splitlog up` on SQLite and is called through
the gateway over gRPC. One client creates BILLS bills one at a time among 4
members (a random payer, an equal split among 2 to 4 members), then reads the
group's balances.

Run: `python -m bench.peer_ihatemoney [--bills 1000]`. The first run installs
ihatemoney into build/peers/ihatemoney (PyPI access needed once).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import httpx

from splitlog.balances.v1 import balances_service_pb2 as balances_pb
from splitlog.balances.v1 import balances_service_pb2_grpc as balances_grpc
from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from splitlog.expenses.v1 import expenses_service_pb2_grpc as expenses_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc

ROOT = Path(__file__).resolve().parent.parent
PEER_VENV = ROOT / "build" / "peers" / "ihatemoney"
PEER_VERSION = "7.2.1"
MEMBERS = ("ana", "ben", "cleo", "dan")
READS = 20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not respond within {timeout:.0f} s")


def _workload(bills: int, seed: int = 7) -> list[tuple[int, int, list[int]]]:
    """Return (amount in cents, payer index, participant indexes) per bill."""
    rng = random.Random(seed)
    plan = []
    for _ in range(bills):
        participants = sorted(rng.sample(range(len(MEMBERS)), rng.randint(2, 4)))
        plan.append(
            (rng.randint(100, 20_000), rng.randrange(len(MEMBERS)), participants)
        )
    return plan


def _summary(label: str, create_ms: list[float], read_ms: list[float]) -> str:
    per_second = len(create_ms) / (sum(create_ms) / 1000)
    return (
        f"| {label} | {statistics.median(create_ms):.2f} | {per_second:,.0f} "
        f"| {statistics.median(read_ms):.2f} |"
    )


def _ensure_peer() -> Path:
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                f"ihatemoney=={PEER_VERSION}",
                "gunicorn",
            ],
            check=True,
        )
    return PEER_VENV / "bin"


def run_ihatemoney(plan, tmp: Path) -> tuple[list[float], list[float]]:
    """Run the workload against ihatemoney; return create and read latencies."""
    bin_dir = _ensure_peer()
    tmp.mkdir(parents=True, exist_ok=True)
    settings = tmp / "ihatemoney.cfg"
    settings.write_text(
        f'SQLALCHEMY_DATABASE_URI = "sqlite:///{tmp / "ihatemoney.db"}"\n'
        'SECRET_KEY = "bench"\nACTIVATE_DEMO_PROJECT = False\n'
        "ALLOW_PUBLIC_PROJECT_CREATION = True\nSESSION_COOKIE_SECURE = False\n"
    )
    port = _free_port()
    server = subprocess.Popen(
        [
            str(bin_dir / "gunicorn"),
            "--preload",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "ihatemoney.wsgi:application",
        ],
        env={**os.environ, "IHATEMONEY_SETTINGS_FILE_PATH": str(settings)},
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "gunicorn.log", "wb"),  # noqa: SIM115
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}/api"
    try:
        _wait_http(f"{base}/currencies")
        with httpx.Client(base_url=base, timeout=30) as client:
            project = "bench" + uuid.uuid4().hex[:6]
            created = client.post(
                "/projects",
                data={
                    "name": "Bench",
                    "id": project,
                    "password": "secret",
                    "contact_email": "bench@example.com",
                    "default_currency": "EUR",
                },
            )
            created.raise_for_status()
            token = client.get(f"/projects/{project}/token", auth=(project, "secret"))
            headers = {"Authorization": f"Bearer {token.json()['token']}"}
            ids = [
                client.post(
                    f"/projects/{project}/members", data={"name": name}, headers=headers
                ).json()
                for name in MEMBERS
            ]
            create_ms = []
            for amount, payer, participants in plan:
                form = {
                    "date": "2026-12-01",
                    "what": "bench",
                    "payer": ids[payer],
                    "payed_for": [ids[i] for i in participants],
                    "amount": f"{amount / 100:.2f}",
                }
                started = time.perf_counter()
                response = client.post(
                    f"/projects/{project}/bills", data=form, headers=headers
                )
                create_ms.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
            read_ms = []
            for _ in range(READS):
                started = time.perf_counter()
                client.get(f"/projects/{project}", headers=headers).raise_for_status()
                read_ms.append((time.perf_counter() - started) * 1000)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    return create_ms, read_ms


def _money(cents: int) -> dict:
    return {"currency_code": "EUR", "units": cents // 100, "nanos": cents % 100 * 10**7}


def run_splitlog(plan, tmp: Path) -> tuple[list[float], list[float]]:
    """Run the workload against splitlog through the gateway."""
    ports = {
        flag: _free_port()
        for flag in (
            "--gateway-port",
            "--http-port",
            "--user-service-port",
            "--expense-service-port",
            "--balance-service-port",
            "--log-service-port",
        )
    }
    args = [
        str(ROOT / ".venv" / "bin" / "splitlog"),
        "up",
        "--data-dir",
        str(tmp),
        "--log-level",
        "WARNING",
        # The numbers in docs/benchmarks.md are for calls without a credential.
        "--auth-required",
        "false",
    ]
    for flag, port in ports.items():
        args += [flag, str(port)]
    server = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"127.0.0.1:{ports['--gateway-port']}"
    try:
        channel = grpc.insecure_channel(address)
        grpc.channel_ready_future(channel).result(timeout=60)
        users = users_grpc.UsersServiceStub(channel)
        expenses = expenses_grpc.ExpensesServiceStub(channel)
        balances = balances_grpc.BalancesServiceStub(channel)
        suffix = uuid.uuid4().hex[:6]
        names = []
        for member in MEMBERS:
            user = users_pb.User(
                email=f"{member}-{suffix}@example.com", display_name=member
            )
            names.append(
                users.CreateUser(
                    users_pb.CreateUserRequest(user=user), timeout=30
                ).user.name
            )
        group = users.CreateGroup(
            users_pb.CreateGroupRequest(
                group=users_pb.Group(
                    display_name="Bench", creator=names[0], currency_code="EUR"
                )
            ),
            timeout=30,
        ).group.name
        for name in names[1:]:
            users.AddGroupMember(
                users_pb.AddGroupMemberRequest(parent=group, user=name), timeout=30
            )
        create_ms = []
        for amount, payer, participants in plan:
            expense = expenses_pb.Expense(
                description="bench",
                expense_date={"year": 2026, "month": 12, "day": 1},
                total=_money(amount),
                payers=[{"user": names[payer], "amount": _money(amount)}],
                split={
                    "type": expenses_pb.SPLIT_TYPE_EQUAL,
                    "participants": [{"user": names[i]} for i in participants],
                },
                creator=names[0],
            )
            request = expenses_pb.CreateExpenseRequest(parent=group, expense=expense)
            started = time.perf_counter()
            expenses.CreateExpense(request, timeout=30)
            create_ms.append((time.perf_counter() - started) * 1000)
        read_ms = []
        balance_request = balances_pb.GetGroupBalanceRequest(name=f"{group}/balance")
        for _ in range(READS):
            started = time.perf_counter()
            balances.GetGroupBalance(balance_request, timeout=30)
            read_ms.append((time.perf_counter() - started) * 1000)
        channel.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    return create_ms, read_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bills", type=int, default=1000)
    options = parser.parse_args()
    plan = _workload(options.bills)
    print(
        f"{options.bills} bills, one client, {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}"
    )
    print("| system | create p50 ms | creates/s | read balances p50 ms |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        ihm = run_ihatemoney(plan, Path(tmp) / "peer")
        print(_summary(f"ihatemoney {PEER_VERSION} (REST)", *ihm), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        ours = run_splitlog(plan, Path(tmp))
        print(_summary("splitlog (gRPC via gateway)", *ours), flush=True)


if __name__ == "__main__":
    main()
