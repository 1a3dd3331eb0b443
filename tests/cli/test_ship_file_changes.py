"""`splitlog logs ship` over a file that changes while or between runs.

A real log router and gateway run on 127.0.0.1. The command runs in this
process and reaches the gateway through a small forwarding gRPC server of
the test, which changes the file on disk when a chosen WriteLogEntries call
arrives, before it forwards that call. So the change happens at a known
point of the run: after the command read the first batch and before it
reads the rest.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from concurrent import futures

import grpc
import pytest

from splitlog_cli.client.logs import EXIT_FILE_CHANGED
from splitlog_runtime import config as config_module
from tests.cli.test_logs_cli import (
    LogsGateway,
    _stored_numbers,
    line_time,
    run,
)
from tests.log_service.test_router_cluster import list_all

_WRITE_METHOD = "/splitlog.logs.v1.LogsService/WriteLogEntries"


class ChangingProxy:
    """Forwards unary calls to the gateway, running an action before the
    n-th WriteLogEntries call is forwarded."""

    def __init__(self, target: str) -> None:
        self._channel = grpc.insecure_channel(target)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._server.add_generic_rpc_handlers([_Forward(self)])
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self.address = f"127.0.0.1:{self.port}"
        self.writes = 0
        self.actions: dict[int, Callable[[], None]] = {}

    def before_write(self, number: int, action: Callable[[], None]) -> None:
        """Run `action` before forwarding WriteLogEntries call `number`,
        counting from 1 over the proxy's life."""
        self.actions[self.writes + number] = action

    def forward(self, method: str, request: bytes, context) -> bytes:
        if method == _WRITE_METHOD:
            self.writes += 1
            action = self.actions.pop(self.writes, None)
            if action is not None:
                action()
        call = self._channel.unary_unary(method)
        try:
            return call(request, timeout=30, metadata=context.invocation_metadata())
        except grpc.RpcError as exc:
            context.set_trailing_metadata(exc.trailing_metadata() or ())
            context.abort(exc.code(), exc.details())

    def close(self) -> None:
        self._server.stop(0)
        self._channel.close()


class _Forward(grpc.GenericRpcHandler):
    def __init__(self, proxy: ChangingProxy) -> None:
        self._proxy = proxy

    def service(self, handler_call_details):
        method = handler_call_details.method

        def handle(request: bytes, context) -> bytes:
            return self._proxy.forward(method, request, context)

        return grpc.unary_unary_rpc_method_handler(handle)


@pytest.fixture(scope="module")
def live(loop_thread, tmp_path_factory):
    base = config_module.load(
        environ={},
        overrides={"auth_required": False, "data_dir": tmp_path_factory.mktemp("logs")},
    )
    running = LogsGateway(base, tmp_path_factory.mktemp("gateway"), loop_thread)
    yield running
    running.close()


@pytest.fixture
def proxy(live):
    running = ChangingProxy(live.address)
    yield running
    running.close()


def _numbered(prefix: str, first: int, count: int) -> str:
    """Return lines `<time> INFO <prefix> line N` for N from `first`, each with LF."""
    return "".join(
        f"{line_time(60)} INFO {prefix} line {n}\n" for n in range(first, first + count)
    )


def _messages(live, service: str) -> list[str]:
    return sorted(entry.message for entry in list_all(live.stub, services=[service]))


def test_ship_partial_line_appended_during_run(live, proxy, tmp_path, capsys):
    service = "ship-append-partial"
    path = tmp_path / "app.log"
    path.write_text(_numbered("", 0, 4))
    positions = tmp_path / "positions.json"
    command = ["logs", "ship", str(path), "--service", service]
    command += ["--batch-size", "2", "--positions", str(positions)]
    partial = f"{line_time(60)} INFO  line 4"

    def write_half_a_line() -> None:
        with open(path, "a", encoding="utf-8") as file:
            file.write(partial)

    # The writer starts line 5 while the first batch is in flight.
    proxy.before_write(1, write_half_a_line)
    first = run(capsys, proxy.address, *command)
    # It finishes line 5 after the run, and writes line 6.
    with open(path, "a", encoding="utf-8") as file:
        file.write(" finished\n")
        file.write(_numbered("", 5, 1))
    second = run(capsys, proxy.address, *command)

    assert first[0] == 0, first[2]
    # The first run ships the 4 lines that the file had when it started.
    assert re.search(r"^stored: +4$", first[1], re.M), first[1]
    assert second[0] == 0, second[2]
    assert re.search(r"^stored: +2$", second[1], re.M), second[1]
    assert _stored_numbers(live, service) == list(range(6))
    assert f"{partial} finished" in _messages(live, service)
    assert partial not in _messages(live, service)


def test_ship_lines_appended_during_run_left_to_rerun(live, proxy, tmp_path, capsys):
    service = "ship-append-whole"
    path = tmp_path / "app.log"
    path.write_text(_numbered("", 0, 5))
    positions = tmp_path / "positions.json"
    command = ["logs", "ship", str(path), "--service", service]
    command += ["--batch-size", "2", "--positions", str(positions)]

    def append() -> None:
        with open(path, "a", encoding="utf-8") as file:
            file.write(_numbered("", 5, 3))

    proxy.before_write(1, append)
    first = run(capsys, proxy.address, *command)
    second = run(capsys, proxy.address, *command)

    assert first[0] == 0, first[2]
    assert re.search(r"^stored: +5$", first[1], re.M), first[1]
    assert second[0] == 0, second[2]
    assert "skipping lines 1 to 5 of" in second[2]
    assert re.search(r"^stored: +3$", second[1], re.M), second[1]
    assert _stored_numbers(live, service) == list(range(8))


def _copy_and_truncate(path, copy, new_text: str) -> Callable[[], None]:
    """Return an action that rotates `path` as logrotate's copytruncate does,
    after which the program writes `new_text`."""

    def rotate() -> None:
        shutil.copyfile(path, copy)
        with open(path, "r+b") as file:
            file.truncate(0)
        with open(path, "a", encoding="utf-8") as file:
            file.write(new_text)

    return rotate


@pytest.mark.parametrize("positions", [True, False])
def test_ship_copy_truncate_during_run(live, proxy, tmp_path, capsys, positions):
    service = f"ship-copytruncate-{positions}"
    path = tmp_path / "app.log"
    copy = tmp_path / "app.log.1"
    # Larger than one read of the file, so that most of it is read after
    # the rotation.
    path.write_text(_numbered("old", 0, 400))
    command = ["logs", "ship", str(path), "--service", service]
    command += ["--batch-size", "50"]
    if positions:
        command += ["--positions", str(tmp_path / "positions.json")]
    else:
        command += ["--no-positions"]
    # The program writes more than the command read before the rotation.
    new_text = _numbered("new", 0, 600)

    proxy.before_write(1, _copy_and_truncate(path, copy, new_text))
    during = run(capsys, proxy.address, *command)
    after = run(capsys, proxy.address, *command)
    messages = list_all(live.stub, services=[service])
    texts = [entry.message for entry in messages]

    assert during[0] == EXIT_FILE_CHANGED, during[2]
    assert after[0] == 0, after[2]
    # Every entry is a whole line of one file or the other.
    for text in texts:
        assert re.fullmatch(r"\S+ \S+ INFO (old|new) line \d+", text), text
    old = [text for text in texts if " old " in text]
    new = [text for text in texts if " new " in text]
    # The first batch was sent before the rotation, each line once.
    assert len(old) == 50
    assert len(set(old)) == 50
    if positions:
        # The rerun ships the new file whole, each line once.
        assert len(new) == 600
        assert len(set(new)) == 600
    assert "was truncated or replaced while it was shipped" in during[2]
    assert "from line 51 on" in during[2]
    summary = during[2].strip().splitlines()[-1]
    assert summary == (
        f"splitlog logs ship: error: 1 file changed while it was shipped, so "
        f"lines of it were not shipped: {path} from line 51"
    ), during[2]


def test_ship_rerun_after_truncate_same_recorded_line(live, tmp_path, capsys):
    service = "ship-truncate-same-line"
    path = tmp_path / "app.log"
    positions = tmp_path / "positions.json"
    command = ["logs", "ship", str(path), "--service", service]
    command += ["--batch-size", "10", "--positions", str(positions)]
    # The first and the last line have no time, as a banner and a marker
    # that the program writes in every file.
    path.write_text("== app started ==\n" + _numbered("x", 1, 3) + "-- mark --\n")
    first = run(capsys, live.address, *command)
    # Truncated and written again: the same first line, and line 5 is the
    # same marker, but lines 2 to 4 are others of the same length.
    with open(path, "r+b") as file:
        file.truncate(0)
    with open(path, "a", encoding="utf-8") as file:
        file.write("== app started ==\n" + _numbered("y", 1, 3) + "-- mark --\n")
        file.write(_numbered("y", 5, 1))
    second = run(capsys, live.address, *command)
    texts = _messages(live, service)

    assert first[0] == 0, first[2]
    assert second[0] == 0, second[2]
    assert "skipping lines" not in second[2]
    assert "shipped from line 1" in second[2]
    for number in (1, 2, 3, 5):
        found = [text for text in texts if text.endswith(f"INFO y line {number}")]
        assert len(found) == 1, (number, texts)


def test_ship_rename_during_run_reads_renamed_file(live, proxy, tmp_path, capsys):
    service = "ship-rename-during"
    path = tmp_path / "app.log"
    renamed = tmp_path / "app.log.1"
    positions = tmp_path / "positions.json"
    path.write_text(_numbered("old", 0, 5))
    command = ["logs", "ship", str(path), "--service", service]
    command += ["--batch-size", "2", "--positions", str(positions)]

    def rotate() -> None:
        # The program writes two more lines before it reopens its log.
        path.rename(renamed)
        with open(renamed, "a", encoding="utf-8") as file:
            file.write(_numbered("old", 5, 2))
        path.write_text(_numbered("new", 0, 3))

    proxy.before_write(1, rotate)
    during = run(capsys, proxy.address, *command)
    after = run(capsys, proxy.address, *command)
    texts = _messages(live, service)

    assert during[0] == 0, during[2]
    assert re.search(r"^stored: +7$", during[1], re.M), during[1]
    assert after[0] == 0, after[2]
    assert "it was rotated or replaced" in after[2]
    assert re.search(r"^stored: +3$", after[1], re.M), after[1]
    assert len(texts) == 10
    assert len(set(texts)) == 10
