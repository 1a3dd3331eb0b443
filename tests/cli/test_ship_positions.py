"""Tests of the positions file of `splitlog logs ship`, on real files."""

from __future__ import annotations

import json
import os

from splitlog_cli.client import ship_positions
from splitlog_cli.client.ship_positions import Position, PositionsFile

SERVICE = "web"
LOG_PATH = "/var/log/app.log"


def _position(line: int, head: str = "head") -> Position:
    return Position(device=1, inode=2, head=head, line=line, line_digest="d")


def test_save_keeps_further_record(tmp_path):
    positions = PositionsFile(tmp_path / "positions.json")

    positions.save(SERVICE, LOG_PATH, _position(10))
    # A concurrent run that is behind saves after the one ahead.
    positions.save(SERVICE, LOG_PATH, _position(5))

    assert positions.load(SERVICE, LOG_PATH).line == 10


def test_save_replaces_record_of_other_file(tmp_path):
    positions = PositionsFile(tmp_path / "positions.json")

    positions.save(SERVICE, LOG_PATH, _position(10))
    positions.save(SERVICE, LOG_PATH, _position(5, head="other head"))

    assert positions.load(SERVICE, LOG_PATH).line == 5


def test_save_moves_back_when_allowed(tmp_path):
    positions = PositionsFile(tmp_path / "positions.json")

    positions.save(SERVICE, LOG_PATH, _position(10))
    positions.save(SERVICE, LOG_PATH, _position(5), allow_backwards=True)

    assert positions.load(SERVICE, LOG_PATH).line == 5


def test_save_through_symlink_keeps_link(tmp_path):
    target = tmp_path / "real" / "positions.json"
    target.parent.mkdir()
    target.write_text(json.dumps({"version": 1, "files": {}}))
    link = tmp_path / "positions.json"
    link.symlink_to(target)
    positions = PositionsFile(link)

    positions.save(SERVICE, LOG_PATH, _position(3))

    assert link.is_symlink()
    assert PositionsFile(target).load(SERVICE, LOG_PATH).line == 3
    # The lock sits next to the target, and no temporary file is left.
    names = sorted(entry.name for entry in target.parent.iterdir())
    assert names == ["positions.json", "positions.json.lock"]


def test_load_wrong_types_is_absent(tmp_path, capsys):
    path = tmp_path / "positions.json"
    good = {"device": 1, "inode": 2, "head": "h", "line": 4, "line_digest": "d"}
    cases = {
        "string line": {**good, "line": "4"},
        "bool inode": {**good, "inode": True},
        "number head": {**good, "head": 7},
        "negative line": {**good, "line": -1},
        "null digest": {**good, "line_digest": None},
        "cuts not a list": {**good, "cuts": 7},
        "string cut": {**good, "cuts": ["7"]},
        "negative cut": {**good, "cuts": [-7]},
    }
    records = {
        PositionsFile.key(SERVICE, name): record for name, record in cases.items()
    }
    records[PositionsFile.key(SERVICE, "good")] = good
    path.write_text(json.dumps({"version": 1, "files": records}))
    positions = PositionsFile(path)

    for name in cases:
        assert positions.load(SERVICE, name) is None, name
    assert positions.load(SERVICE, "good").line == 4
    assert positions.load(SERVICE, "good").cuts == []
    err = capsys.readouterr().err
    assert "a record is not one that `splitlog logs ship` writes" in err


def test_head_prefix_of_unterminated_line(tmp_path):
    path = tmp_path / "app.log"
    path.write_bytes(b"first line so")
    head, head_bytes = ship_positions.read_head(str(path))
    record = Position(device=1, inode=2, head=head, head_bytes=head_bytes)

    path.write_bytes(b"first line so far\nsecond\n")

    assert head_bytes == len(b"first line so")
    assert ship_positions.head_matches(str(path), record)
    path.write_bytes(b"first lime so far\n")
    assert not ship_positions.head_matches(str(path), record)
    os.truncate(path, 0)
    assert not ship_positions.head_matches(str(path), record)


def test_load_batches_to_send_again(tmp_path, capsys):
    path = tmp_path / "positions.json"
    good = {"device": 1, "inode": 2, "head": "h", "line": 9, "line_digest": "d"}
    cases = {
        "not a list": {**good, "retry": 3},
        "bare line": {**good, "retry": [3]},
        "one line": {**good, "retry": [[3]]},
        "three lines": {**good, "retry": [[3, 4, 5]]},
        "string line": {**good, "retry": [["3", 4]]},
        "line 0": {**good, "retry": [[0, 4]]},
        "backwards": {**good, "retry": [[4, 3]]},
        "overlapping": {**good, "retry": [[3, 5], [5, 6]]},
        "out of order": {**good, "retry": [[6, 7], [3, 4]]},
        "past the line": {**good, "retry": [[8, 10]]},
    }
    records = {
        PositionsFile.key(SERVICE, name): record for name, record in cases.items()
    }
    records[PositionsFile.key(SERVICE, "good")] = {**good, "retry": [[3, 4], [5, 9]]}
    # A record of the version before batches to send again: it has none.
    records[PositionsFile.key(SERVICE, "earlier")] = {**good, "cuts": [12]}
    path.write_text(json.dumps({"version": 1, "files": records}))
    positions = PositionsFile(path)

    for name in cases:
        assert positions.load(SERVICE, name) is None, name
    assert positions.load(SERVICE, "good").retry == [[3, 4], [5, 9]]
    earlier = positions.load(SERVICE, "earlier")
    assert (earlier.line, earlier.cuts, earlier.retry) == (9, [12], [])
    err = capsys.readouterr().err
    assert "a record is not one that `splitlog logs ship` writes" in err


def test_retry_lines_in_ascending_order():
    retry_lines = ship_positions.RetryLines([[3, 4], [7, 7], [9, 12]])

    assert [line for line in range(1, 15) if retry_lines.contains(line)] == [
        3, 4, 7, 9, 10, 11, 12,
    ]  # fmt: skip


def _read_all(reader: ship_positions.LineReader) -> list[bytes]:
    return list(iter(reader.readline, b""))


def test_line_reader_stops_at_limit(tmp_path):
    path = tmp_path / "app.log"
    path.write_bytes(b"one\ntwo\nthree\n")

    with open(path, "rb") as file:
        at_line_end = _read_all(ship_positions.LineReader(file, limit=4))
    with open(path, "rb") as file:
        within_line = _read_all(ship_positions.LineReader(file, limit=5))

    # A line that starts before the limit is read whole.
    assert at_line_end == [b"one\n"]
    assert within_line == [b"one\n", b"two\n"]


def test_line_reader_prefix_digest(tmp_path):
    path = tmp_path / "app.log"
    path.write_bytes(b"one\ntwo\nthree\n")

    with open(path, "rb") as file:
        reader = ship_positions.LineReader(file, digest=True)
        reader.readline()
        reader.readline()
        whole = reader.prefix_digest()
        partial = reader.prefix_digest(2)

    assert (reader.line_start, reader.offset) == (4, 8)
    assert whole == ship_positions.bytes_digest(b"one\ntwo\n")
    assert partial == ship_positions.bytes_digest(b"one\ntw")


def test_read_head_at_stops_at_size(tmp_path):
    path = tmp_path / "app.log"
    path.write_bytes(b"first line\nsecond\n")

    with open(path, "rb") as file:
        head, head_bytes = ship_positions.read_head_at(file.fileno(), 5)
        offset = file.tell()

    assert head == ship_positions.bytes_digest(b"first")
    assert head_bytes == 5
    assert offset == 0


def test_first_use_removes_abandoned_temporaries(tmp_path):
    path = tmp_path / "positions.json"
    # What `write_file_atomically` leaves when a run is killed before its
    # rename, and a file of another program beside it.
    stale = tmp_path / ".positions.json.o83txpw8.tmp"
    other = tmp_path / ".notes.json.o83txpw8.tmp"
    stale.write_text('{"version": 1, "fi')
    other.write_text("keep")
    positions = PositionsFile(path)

    assert positions.load(SERVICE, LOG_PATH) is None

    assert not stale.exists()
    assert other.read_text() == "keep"
