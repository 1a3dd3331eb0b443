"""Time how long a wide BatchCreateExpenses takes to reach the balances.

`python -m bench.wide_batch` starts user_service, expense_service and
balance_service as `splitlog serve` processes on free loopback ports, or
on `--first-port` and the two after it. Each service gets its own SQLite
file. With `--postgres URL` they use fresh PostgreSQL databases instead,
one for balance_service and one for the other two, created on the server
of URL and dropped at the end. The bench creates a group of `--members`
members and sends one BatchCreateExpenses of `--expenses` expenses, each
split equally among every member and paid by one of them in turn. Then it
reads GetGroupBalance every 20 ms until the net amounts are those of the
created expenses.

Each run prints the seconds the call took, the seconds from its response to
the first read that shows every expense (the lag), and the CPU seconds
that balance_service used from the call to that read, read from /proc. With
PostgreSQL on the same machine it also prints the CPU seconds of the server
processes that serve balance_service's database. With
`--expense-max-batch-pairs N` the services run with that setting.

Run: `python -m bench.wide_batch [--members 200] [--expenses 1000] [--runs 1]
[--postgres postgresql+psycopg://127.0.0.1:5432/test]`.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, text

from splitlog.balances.v1 import balances_service_pb2 as balances_pb
from splitlog.balances.v1 import balances_service_pb2_grpc as balances_grpc
from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from splitlog.expenses.v1 import expenses_service_pb2_grpc as expenses_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc

ROOT = Path(__file__).resolve().parent.parent
SPLITLOG = ROOT / ".venv" / "bin" / "splitlog"
SERVICES = ("user_service", "expense_service", "balance_service")
#: Seconds each service may take to report SERVING after its start.
STARTUP_SECONDS = 120
#: Seconds the balances may take to show the batch before the run fails.
LAG_LIMIT_SECONDS = 600
POLL_SECONDS = 0.02


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _cpu_seconds(pid: int) -> float:
    """Return the user and system CPU seconds of a process from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_serving(address: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"{address} exited:\n{log.read_text()[-3000:]}")
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if status.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise SystemExit(f"{address} was not serving after {STARTUP_SECONDS} s")


class Services:
    """The three services as `splitlog serve` processes."""

    def __init__(self, folder: Path, urls: dict[str, str], ports: list[int], extra):
        self.ports = dict(zip(SERVICES, ports, strict=True))
        common = ["--data-dir", str(folder / "data"), "--grace-seconds", "1"]
        common += ["--log-level", "WARNING", *extra]
        for service, port in self.ports.items():
            flag = "--" + service.replace("_", "-")
            common += [f"{flag}-port", str(port), f"{flag}-db-url", urls[service]]
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("SPLITLOG_")
        }
        environment["SPLITLOG_LOG_SELF_SHIP"] = "false"
        environment["SPLITLOG_AUTH_REQUIRED"] = "false"
        self.processes: dict[str, subprocess.Popen] = {}
        for service in SERVICES:
            log = folder / f"{service}.log"
            with open(log, "wb") as output:
                self.processes[service] = subprocess.Popen(
                    [str(SPLITLOG), "serve", service, *common],
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env=environment,
                    start_new_session=True,
                )
            _wait_serving(self.address(service), self.processes[service], log)

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def stop(self) -> None:
        for process in self.processes.values():
            os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)


def _make_group(channel: grpc.Channel, members: int) -> tuple[str, list[str]]:
    users = users_grpc.UsersServiceStub(channel)
    suffix = uuid.uuid4().hex[:8]
    names = [
        users.CreateUser(
            users_pb.CreateUserRequest(
                user=users_pb.User(
                    email=f"w{index}-{suffix}@example.com", display_name=f"W{index}"
                )
            ),
            timeout=30,
        ).user.name
        for index in range(members)
    ]
    group = users.CreateGroup(
        users_pb.CreateGroupRequest(
            group=users_pb.Group(
                display_name="Wide", creator=names[0], currency_code="EUR"
            )
        ),
        timeout=30,
    ).group.name
    for name in names[1:]:
        users.AddGroupMember(
            users_pb.AddGroupMemberRequest(parent=group, user=name), timeout=30
        )
    return group, names


def _batch(group: str, names: list[str], count: int):
    creates = []
    for index in range(count):
        cents = 10_000 + index * 37
        money = {
            "currency_code": "EUR",
            "units": cents // 100,
            "nanos": cents % 100 * 10**7,
        }
        payer = names[index % len(names)]
        creates.append(
            expenses_pb.CreateExpenseRequest(
                expense=expenses_pb.Expense(
                    description=f"wide {index}",
                    expense_date={"year": 2026, "month": 11, "day": 1 + index % 28},
                    total=money,
                    payers=[{"user": payer, "amount": money}],
                    split={
                        "type": expenses_pb.SPLIT_TYPE_EQUAL,
                        "participants": [{"user": name} for name in names],
                    },
                    creator=payer,
                )
            )
        )
    return expenses_pb.BatchCreateExpensesRequest(parent=group, requests=creates)


def _cents(money) -> int:
    return money.units * 100 + money.nanos // 10**7


def _expected_nets(expenses) -> Counter:
    nets: Counter = Counter()
    for expense in expenses:
        for payer in expense.payers:
            nets[payer.user] += _cents(payer.amount)
        for owed in expense.owed_amounts:
            nets[owed.user] -= _cents(owed.amount)
    return nets


def _nets(balance) -> Counter:
    nets: Counter = Counter()
    for currency in balance.currency_balances:
        for member in currency.member_balances:
            nets[member.user] += _cents(member.net_amount)
    return nets


def _server_cpu(admin_url: str, database: str) -> dict[int, float]:
    """Return the CPU seconds of each PostgreSQL process serving `database`.

    The server must run on this machine, so that /proc shows its processes.
    """
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        pids = connection.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = :name"),
            {"name": database},
        ).scalars()
        seconds = {}
        for pid in pids:
            try:
                seconds[pid] = _cpu_seconds(pid)
            except OSError:
                continue
    engine.dispose()
    return seconds


def run_once(
    services: Services, members: int, count: int, postgres: tuple[str, str] | None
) -> tuple[float, ...]:
    """Return the call's seconds, the lag and the CPU seconds of balance_service.

    The last value is the CPU seconds of the PostgreSQL processes that serve
    balance_service, or 0 without `postgres`, the admin URL and the name of
    balance_service's database.
    """
    balance_pid = services.processes["balance_service"].pid
    with (
        grpc.insecure_channel(services.address("user_service")) as user_channel,
        grpc.insecure_channel(
            services.address("expense_service"),
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
        ) as expense_channel,
        grpc.insecure_channel(services.address("balance_service")) as balance_channel,
    ):
        group, names = _make_group(user_channel, members)
        request = _batch(group, names, count)
        balances = balances_grpc.BalancesServiceStub(balance_channel)
        read = balances_pb.GetGroupBalanceRequest(name=f"{group}/balance")
        cpu_before = _cpu_seconds(balance_pid)
        server_before = _server_cpu(*postgres) if postgres else {}
        started = time.perf_counter()
        response = expenses_grpc.ExpensesServiceStub(
            expense_channel
        ).BatchCreateExpenses(request, timeout=600)
        returned = time.perf_counter()
        expected = _expected_nets(response.expenses)
        # Counters compare missing keys as zero (Python 3.10 and later).
        while _nets(balances.GetGroupBalance(read, timeout=30).balance) != expected:
            if time.perf_counter() - returned > LAG_LIMIT_SECONDS:
                raise SystemExit(f"the balances lag over {LAG_LIMIT_SECONDS} s")
            time.sleep(POLL_SECONDS)
        applied = time.perf_counter()
        cpu = _cpu_seconds(balance_pid) - cpu_before
        server_after = _server_cpu(*postgres) if postgres else {}
    server = sum(
        seconds - server_before.get(pid, 0.0) for pid, seconds in server_after.items()
    )
    return returned - started, applied - returned, cpu, server


def _postgres_database(url: str) -> tuple[str, str]:
    """Create a fresh database on the server of `url`; return its URL and name."""
    name = f"splitlog_bench_{uuid.uuid4().hex[:12]}"
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return url.rsplit("/", 1)[0] + f"/{name}", name


def _drop_database(url: str, name: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def _print_runs(services: Services, args, postgres: tuple[str, str] | None) -> None:
    database = "PostgreSQL" if args.postgres else "SQLite"
    print(
        f"Machine: {len(os.sched_getaffinity(0))} CPUs, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f}; "
        f"{database}; {args.expenses} expenses of {args.members} members each.\n"
    )
    print("| run | call s | lag s | balance_service CPU s | its PostgreSQL CPU s |")
    print("|---:|---:|---:|---:|---:|")
    for run in range(args.runs):
        call, lag, cpu, server = run_once(
            services, args.members, args.expenses, postgres
        )
        print(
            f"| {run + 1} | {call:.1f} | {lag:.1f} | {cpu:.1f} | {server:.1f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--members", type=int, default=200, help="group size")
    parser.add_argument(
        "--expenses", type=int, default=1000, help="expenses in the batch"
    )
    parser.add_argument("--runs", type=int, default=1, help="batches, one per group")
    parser.add_argument(
        "--postgres", metavar="URL", default="", help="PostgreSQL server to use"
    )
    parser.add_argument(
        "--first-port", type=int, default=0, help="first of 3 ports; 0: free ones"
    )
    parser.add_argument(
        "--expense-max-batch-pairs",
        type=int,
        default=0,
        help="the services' expense_max_batch_pairs; 0: their default",
    )
    args = parser.parse_args()

    extra = []
    if args.expense_max_batch_pairs:
        extra = ["--expense-max-batch-pairs", str(args.expense_max_batch_pairs)]
    ports = _free_ports(3)
    if args.first_port:
        ports = [args.first_port + offset for offset in range(3)]

    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        dropped = []
        postgres = None
        if args.postgres:
            url, database = _postgres_database(args.postgres)
            balance_url, balance_database = _postgres_database(args.postgres)
            dropped = [database, balance_database]
            postgres = (args.postgres, balance_database)
            urls = dict.fromkeys(SERVICES, url)
            urls["balance_service"] = balance_url
        else:
            urls = {service: f"sqlite:///{folder / service}.db" for service in SERVICES}

        services = Services(folder, urls, ports, extra)
        try:
            _print_runs(services, args, postgres)
        finally:
            services.stop()
            for database in dropped:
                _drop_database(args.postgres, database)


if __name__ == "__main__":
    main()
