"""The expense side end to end: creates, balance reads and a Splitwise import.

Starts `splitlog up` (all-in-one, SQLite) on free ports, then `splitlog up
--processes` (one process per component), and measures in each, through the
gateway:

1. CreateExpense with 1, 8 and 32 concurrent clients (calls/s, p50, p99,
   and the server's CPU time per create in total and by process);
2. GetGroupBalance latency once a group has 1k, 10k and 100k expenses
   (p50 and p99 over 200 reads, after balance_service has applied them all);
3. `splitlog import splitwise` of a generated 10,000-row export.

Run: `python -m bench.expenses [--seconds 5] [--sizes 1000,10000,100000]
[--import-rows 10000] [--layouts one,processes] [--auth off,cache,no-cache]`.
Filling 100k expenses takes several minutes per layout.

By default authentication is off (`--auth off`). With `cache` or `no-cache`
it is on, with `auth_cache_seconds` at its default or 0, and every call
sends an API key with `admin`: a user signs up through the gateway, and
`splitlog admin-key` gives it the key, as an operator makes the first
administrator.
"""

from __future__ import annotations

import argparse
import json
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

from bench.load import run_load
from splitlog.auth.v1 import auth_service_pb2 as auth_pb
from splitlog.auth.v1 import auth_service_pb2_grpc as auth_grpc
from splitlog.balances.v1 import balances_service_pb2 as balances_pb
from splitlog.balances.v1 import balances_service_pb2_grpc as balances_grpc
from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc

ROOT = Path(__file__).resolve().parent.parent
SPLITLOG = ROOT / ".venv" / "bin" / "splitlog"
CREATE = "/splitlog.expenses.v1.ExpensesService/CreateExpense"
#: Seconds `splitlog up` may take to serve. `--processes` starts its children
#: one wave after another, which takes a while on a busy machine.
STARTUP_SECONDS = 180
LAYOUTS = {
    "one": "`splitlog up`, every component in one process",
    "processes": "`splitlog up --processes`, one process per component",
}
# Authentication settings of each `--auth` mode, as `splitlog up` flags.
AUTH_MODES = {
    "off": ["--auth-required", "false"],
    "cache": ["--auth-required", "true"],
    "no-cache": ["--auth-required", "true", "--auth-cache-seconds", "0"],
}
AUTH_DESCRIPTIONS = {
    "off": "authentication off",
    "cache": "authentication on, credential cache at its default",
    "no-cache": "authentication on, credential cache off (auth_cache_seconds 0)",
}
Metadata = tuple[tuple[str, str], ...]
PORT_FLAGS = (
    "--gateway-port",
    "--http-port",
    "--user-service-port",
    "--expense-service-port",
    "--balance-service-port",
    "--log-service-port",
)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _log_nodes(shards: int = 2, replicas: int = 2) -> str:
    """Return a `--log-nodes` value with every log node on a free port."""
    ports = iter(_free_ports(shards * replicas))
    return ";".join(
        f"shard-{shard}="
        + ",".join(
            f"shard-{shard}-{'ab'[replica]}@127.0.0.1:{next(ports)}"
            for replica in range(replicas)
        )
        for shard in range(shards)
    )


def _start(
    data_dir: Path, processes: bool, auth: str = "off"
) -> tuple[subprocess.Popen, str]:
    ports = dict(zip(PORT_FLAGS, _free_ports(len(PORT_FLAGS)), strict=True))
    args = [str(SPLITLOG), "up", "--data-dir", str(data_dir), "--log-level", "WARNING"]
    # The numbers in docs/benchmarks.md are for calls without a credential,
    # except where a section says that authentication was on.
    args += AUTH_MODES[auth]
    for flag, port in ports.items():
        args += [flag, str(port)]
    # The log nodes get free ports too, so that the bench runs beside another
    # `splitlog up` on the default ports.
    args += ["--log-nodes", _log_nodes()]
    if processes:
        args.append("--processes")
    process = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"127.0.0.1:{ports['--gateway-port']}"
    try:
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=STARTUP_SECONDS)
    except grpc.FutureTimeoutError:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(60)
        raise SystemExit(
            f"splitlog up timed out: the gateway at {address} was not serving "
            f"after {STARTUP_SECONDS} s; run `splitlog up` with the same flags "
            "to see its output"
        ) from None
    return process, address


def _admin_credential(address: str, data_dir: Path) -> Metadata:
    """Return the metadata of an API key with `admin`, for a new user.

    The user signs up through the gateway; the key comes from `splitlog
    admin-key` on the data directory, the way an operator makes the first
    administrator.
    """
    user_id = f"bench-{uuid.uuid4().hex[:8]}"
    with grpc.insecure_channel(address) as channel:
        signed_up = auth_grpc.AuthServiceStub(channel).SignUp(
            auth_pb.SignUpRequest(
                user=users_pb.User(
                    email=f"{user_id}@example.com", display_name="Bench admin"
                ),
                user_id=user_id,
                password=uuid.uuid4().hex,
            ),
            timeout=30,
        )
    result = subprocess.run(
        [str(SPLITLOG), "admin-key", signed_up.user.name, "--output", "json"]
        + ["--data-dir", str(data_dir), "--log-level", "WARNING"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"splitlog admin-key failed: {result.stderr[-2000:]}")
    secret = json.loads(result.stdout)["secret"]
    return (("authorization", f"Bearer {secret}"),)


def _cpu_by_process(root: int) -> dict[str, float] | None:
    """Return the CPU seconds of a process and its descendants, by component.

    A child of `splitlog up --processes` counts under the component that it
    serves (`serve expense_service` under expense_service, the log nodes
    together under log_node), and `splitlog up` itself under `splitlog up`.
    Returns None where /proc is missing. CPU time per call stays comparable
    when other jobs load the machine, unlike calls/s.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    parents, ticks, commands = {}, {}, {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # Fields after the command name: state, ppid, ..., utime (12th), stime.
        fields = stat.rsplit(")", 1)[1].split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        ticks[pid] = int(fields[11]) + int(fields[12])
        commands[pid] = [part.decode(errors="replace") for part in command]
    tree, added = {root}, True
    while added:
        children = {pid for pid, ppid in parents.items() if ppid in tree} - tree
        tree |= children
        added = bool(children)
    seconds: dict[str, float] = {}
    for pid in tree:
        command = commands.get(pid, [])
        name = "splitlog up"
        if "serve" in command and command.index("serve") + 1 < len(command):
            name = command[command.index("serve") + 1]
        seconds[name] = seconds.get(name, 0.0) + ticks.get(pid, 0) / os.sysconf(
            "SC_CLK_TCK"
        )
    return seconds


def _make_group(
    channel: grpc.Channel, metadata: Metadata = (), members: int = 4
) -> tuple[str, list[str]]:
    users = users_grpc.UsersServiceStub(channel)
    suffix = uuid.uuid4().hex[:8]
    names = [
        users.CreateUser(
            users_pb.CreateUserRequest(
                user=users_pb.User(
                    email=f"m{i}-{suffix}@example.com", display_name=f"M{i}"
                )
            ),
            timeout=30,
            metadata=metadata,
        ).user.name
        for i in range(members)
    ]
    group = users.CreateGroup(
        users_pb.CreateGroupRequest(
            group=users_pb.Group(
                display_name="Bench", creator=names[0], currency_code="EUR"
            )
        ),
        timeout=30,
        metadata=metadata,
    ).group.name
    for name in names[1:]:
        users.AddGroupMember(
            users_pb.AddGroupMemberRequest(parent=group, user=name),
            timeout=30,
            metadata=metadata,
        )
    return group, names


def _expense_request(group: str, names: list[str], rng: random.Random) -> bytes:
    cents = rng.randint(100, 50_000)
    money = {
        "currency_code": "EUR",
        "units": cents // 100,
        "nanos": cents % 100 * 10**7,
    }
    payer = rng.choice(names)
    expense = expenses_pb.Expense(
        description="bench",
        expense_date={"year": 2026, "month": 11, "day": rng.randint(1, 28)},
        total=money,
        payers=[{"user": payer, "amount": money}],
        split={
            "type": expenses_pb.SPLIT_TYPE_EQUAL,
            "participants": [{"user": name} for name in names],
        },
        creator=payer,
    )
    return expenses_pb.CreateExpenseRequest(
        parent=group, expense=expense
    ).SerializeToString()


def bench_creates(
    address: str,
    server_pid: int,
    clients: list[int],
    seconds: float,
    metadata: Metadata = (),
) -> None:
    with grpc.insecure_channel(address) as channel:
        group, names = _make_group(channel, metadata)
    rng = random.Random(1)
    print(
        "\n| CreateExpense via gateway, clients | calls/s | p50 ms | p99 ms "
        "| server CPU ms/call | errors |"
    )
    print("|---|---|---|---|---|---|")

    def make_request(_n: int) -> bytes:
        return _expense_request(group, names, rng)

    # Server CPU ms per create, by process, then by number of clients.
    per_process: dict[str, dict[int, float]] = {}
    for concurrency in clients:
        # A separate warm-up keeps its CPU time out of the measured run's.
        run_load(address, CREATE, make_request, concurrency, 1.0, 0, metadata=metadata)
        cpu_before = _cpu_by_process(server_pid)
        result = run_load(
            address, CREATE, make_request, concurrency, seconds, 0, metadata=metadata
        )
        cpu_after = _cpu_by_process(server_pid)
        cpu = "n/a"
        if cpu_before is not None and cpu_after is not None and result.calls:
            spent = sum(cpu_after.values()) - sum(cpu_before.values())
            cpu = f"{spent * 1000 / result.calls:.2f}"
            for name, after in cpu_after.items():
                per_call = (after - cpu_before.get(name, 0.0)) * 1000 / result.calls
                per_process.setdefault(name, {})[concurrency] = per_call
        print(
            f"| {concurrency} | {result.calls_per_second:,.0f} | {result.p50_ms:.2f} "
            f"| {result.p99_ms:.2f} | {cpu} | {result.errors} |",
            flush=True,
        )
        if result.first_error:
            print(f"first error: {result.first_error}", file=sys.stderr)
    _print_per_process(per_process, clients)


def _print_per_process(
    per_process: dict[str, dict[int, float]], clients: list[int]
) -> None:
    if not per_process:
        return
    print(
        "\n| process: server CPU ms per create, at clients | "
        + " | ".join(str(concurrency) for concurrency in clients)
        + " |"
    )
    print("|---|" + "---|" * len(clients))
    for name, by_clients in sorted(
        per_process.items(), key=lambda item: -item[1].get(clients[-1], 0.0)
    ):
        cells = " | ".join(
            f"{by_clients.get(concurrency, 0.0):.2f}" for concurrency in clients
        )
        print(f"| {name} | {cells} |")


def _wait_applied(stub, name: str, timeout: float, metadata: Metadata) -> float:
    """Wait until two reads a second apart agree, so every create is applied."""
    started = time.monotonic()
    request = balances_pb.GetGroupBalanceRequest(name=name)
    last = None
    while time.monotonic() - started < timeout:
        balance = stub.GetGroupBalance(request, timeout=30, metadata=metadata)
        if balance == last:
            return time.monotonic() - started
        last = balance
        time.sleep(1.0)
    return time.monotonic() - started


def bench_balance_reads(
    address: str, sizes: list[int], metadata: Metadata = ()
) -> None:
    with grpc.insecure_channel(address) as channel:
        group, names = _make_group(channel, metadata)
        stub = balances_grpc.BalancesServiceStub(channel)
        rng = random.Random(2)
        created = 0
        print("\n| expenses in group | fill time s | GetGroupBalance p50 ms | p99 ms |")
        print("|---|---|---|---|")
        for size in sizes:
            fill_started = time.monotonic()
            result = run_load(
                address,
                CREATE,
                lambda _n: _expense_request(group, names, rng),
                32,
                seconds=0,
                warmup=0,
                max_calls=size - created,
                metadata=metadata,
            )
            created += result.calls
            _wait_applied(stub, f"{group}/balance", 600, metadata)
            fill = time.monotonic() - fill_started
            request = balances_pb.GetGroupBalanceRequest(name=f"{group}/balance")
            latencies = []
            for _ in range(200):
                began = time.perf_counter()
                stub.GetGroupBalance(request, timeout=30, metadata=metadata)
                latencies.append((time.perf_counter() - began) * 1000)
            latencies.sort()
            print(
                f"| {created:,} | {fill:.0f} | {statistics.median(latencies):.2f} "
                f"| {latencies[197]:.2f} |",
                flush=True,
            )


def _synthetic_export(rows: int, path: Path) -> None:
    members = ["Ana", "Ben", "Cleo", "Dan"]
    rng = random.Random(3)
    nets = [0] * len(members)
    lines = ["Date,Description,Category,Cost,Currency," + ",".join(members), ""]
    for index in range(rows):
        cents = rng.randint(1, 5000) * len(members)
        payer = rng.randrange(len(members))
        share = cents // len(members)
        row = [-share] * len(members)
        row[payer] += cents
        nets = [a + b for a, b in zip(nets, row, strict=True)]
        cells = ",".join(f"{value / 100:.2f}" for value in row)
        day = 1 + index % 28
        lines.append(
            f"2026-11-{day:02d},Item {index},Groceries,{cents / 100:.2f},EUR,{cells}"
        )
    lines.append("")
    totals = ",".join(f"{value / 100:.2f}" for value in nets)
    lines.append(f"2026-11-30,Total balance, , ,EUR,{totals}")
    path.write_text("\n".join(lines) + "\n")


def bench_import(address: str, rows: int, tmp: Path, metadata: Metadata = ()) -> None:
    path = tmp / f"export-{rows}.csv"
    _synthetic_export(rows, path)
    environ = dict(os.environ)
    # The import sends the bench's API key, or no credential.
    environ.pop("SPLITLOG_TOKEN", None)
    for key, value in metadata:
        if key == "authorization":
            environ["SPLITLOG_TOKEN"] = value.removeprefix("Bearer ")
    started = time.monotonic()
    result = subprocess.run(
        [str(SPLITLOG), "import", "splitwise", str(path), "--gateway", address],
        capture_output=True,
        text=True,
        timeout=3600,
        env=environ,
    )
    elapsed = time.monotonic() - started
    print("\n| Splitwise import, rows | seconds | rows/s | result |")
    print("|---|---|---|---|")
    status = "ok" if result.returncode == 0 else f"exit {result.returncode}"
    print(f"| {rows:,} | {elapsed:.1f} | {rows / elapsed:,.0f} | {status} |")
    if result.returncode != 0:
        print(result.stderr[-2000:], file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--import-rows", type=int, default=10_000)
    parser.add_argument(
        "--layouts",
        default="one,processes",
        help="layouts to measure, comma-separated: `one` is `splitlog up` "
        "(one process), `processes` is `splitlog up --processes`",
    )
    parser.add_argument(
        "--auth",
        default="off",
        help="authentication modes to measure, comma-separated, each in a "
        "fresh `splitlog up`: `off`; `cache`, on with auth_cache_seconds at "
        "its default; `no-cache`, on with auth_cache_seconds 0",
    )
    options = parser.parse_args()
    layouts = options.layouts.split(",")
    auth_modes = options.auth.split(",")
    for layout in layouts:
        if layout not in LAYOUTS:
            parser.error(f"unknown layout {layout!r}; use {', '.join(LAYOUTS)}")
    for mode in auth_modes:
        if mode not in AUTH_MODES:
            parser.error(f"unknown --auth mode {mode!r}; use {', '.join(AUTH_MODES)}")
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, SQLite")
    for layout in layouts:
        for mode in auth_modes:
            print(f"\nlayout: {LAYOUTS[layout]}; {AUTH_DESCRIPTIONS[mode]}", flush=True)
            _bench_layout(options, layout, mode)


def _bench_layout(options: argparse.Namespace, layout: str, auth: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        process, address = _start(data_dir, layout == "processes", auth)
        try:
            metadata: Metadata = ()
            if auth != "off":
                metadata = _admin_credential(address, data_dir)
            bench_creates(
                address,
                process.pid,
                [int(n) for n in options.clients.split(",")],
                options.seconds,
                metadata,
            )
            if options.sizes:
                sizes = [int(n) for n in options.sizes.split(",")]
                bench_balance_reads(address, sizes, metadata)
            if options.import_rows:
                bench_import(address, options.import_rows, Path(tmp), metadata)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(60)


if __name__ == "__main__":
    main()
