"""Per-partition trigram filters that let a keyword query skip partitions.

A keyword filter is `contains(lower(message), lower(keyword))` in DuckDB, so
without help every message of every partition is read. A `TrigramFilter`
records which byte trigrams occur in a partition's messages, and
`may_contain()` returns False only when a keyword cannot occur in any of
them. It may return True for a partition without the keyword (a false
positive costs one scan), but never False for one that contains it.

How a trigram is recorded, and why it stays sound:

- Case. Each byte is masked with 0x5F, which clears the ASCII case bit (and
  the top bit), so `A` and `a` record the same value. The mask also merges
  some other bytes (such as `[` and `{`, and every non-ASCII byte with an
  ASCII one), which adds only false positives.
- Hashing. The three masked bytes are hashed into one of 2^18 bits, a Bloom
  filter with one hash function. An exact set of all 2^24 byte trigrams
  would take 2 MiB per partition in memory, and setting its bits cost more
  per entry (see docs/logs.md).
- Sampling. Only trigrams that start at every `STRIDE`-th byte of the Arrow
  data buffer are recorded. An occurrence of a keyword starts at some
  offset, so for one of the `STRIDE` possible alignments every recorded
  position inside it is sampled. `may_contain()` tries every alignment and
  rules a partition out only when each alignment misses a trigram. A
  keyword needs `STRIDE + 2` bytes for this, shorter ones always scan.
- Trigrams that span two messages of a buffer only add false positives.
- Non-ASCII text. DuckDB's lower() maps one code point to one code point
  (checked for every code point with DuckDB 2.0.1). It may change the UTF-8
  length of a non-ASCII character, so only the ASCII runs of a keyword are
  looked up, each on its own. Two non-ASCII characters lower to ASCII
  letters: KELVIN SIGN U+212A to `k` and U+0130 to `i` (`SPECIAL_CHARACTERS`).
  A partition with either of them in a message can match a keyword through
  them, so the filter then returns True for every keyword (`scan_always`).
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa

from splitlog_runtime import private_files

_LOGGER = logging.getLogger(__name__)

# Bits of the hash, so each filter has 2^HASH_BITS bits.
HASH_BITS = 18
# Distance in bytes between two recorded trigram positions.
STRIDE = 2
# Non-ASCII characters whose lowercase in DuckDB 2.0.1 is an ASCII letter,
# as UTF-8: U+0130 (to "i") and U+212A KELVIN SIGN (to "k").
SPECIAL_CHARACTERS = (b"\xc4\xb0", b"\xe2\x84\xaa")
_CASE_MASK = np.uint32(0x5F5F5F)
_MULTIPLIER = np.uint32(0x9E3779B1)  # Knuth's multiplicative hash constant
_SHIFT = np.uint32(32 - HASH_BITS)
# Sidecar layout: the magic line, one JSON line with the stamp and the
# parameters, then the zlib-compressed bits.
_MAGIC = b"splitlog-trigrams 1\n"
SIDECAR_SUFFIX = ".trigrams"


class TrigramFilter:
    """The hashed trigrams of the messages of one partition.

    Bits are only ever set while the filter is in memory, so a filter stays a
    superset after rows are deleted. A writer may set bits while readers call
    `may_contain`: the rows a new bit covers are not visible to a reader
    until the insert has finished.

    The bits are kept packed (32 KiB) until the first `add` or `update`,
    which unpack them into a bool array (256 KiB) that is fast to set.
    `pack()` goes back, for a partition that is unlikely to change, so a
    store with many day files keeps 32 KiB per file.
    """

    def __init__(self, packed: np.ndarray | None = None, scan_always: bool = False):
        if packed is None:
            packed = np.zeros(1 << (HASH_BITS - 3), dtype=np.uint8)
        # One tuple, replaced whole, so a reader never sees half a change:
        # ("packed", uint8 array, big-endian bit order) or ("bool", array).
        self._bits: tuple[str, np.ndarray] = ("packed", packed)
        self.scan_always = scan_always

    def _writable(self) -> np.ndarray:
        kind, bits = self._bits
        if kind == "bool":
            return bits
        unpacked = np.unpackbits(bits).view(np.bool_)
        self._bits = ("bool", unpacked)
        return unpacked

    def pack(self) -> None:
        """Keep the bits in 1/8 of the memory until the next change."""
        kind, bits = self._bits
        if kind == "bool":
            self._bits = ("packed", np.packbits(bits))

    def _packed(self) -> np.ndarray:
        kind, bits = self._bits
        return bits if kind == "packed" else np.packbits(bits)

    def _all_set(self, indexes: np.ndarray) -> bool:
        kind, bits = self._bits
        if kind == "bool":
            return bool(bits[indexes].all())
        shifts = (7 - (indexes & 7)).astype(np.uint8)
        return bool(((bits[indexes >> 3] >> shifts) & 1).all())

    def add(self, messages: pa.Array | pa.ChunkedArray) -> None:
        """Record the trigrams of a string or large_string column."""
        chunks = (
            messages.chunks if isinstance(messages, pa.ChunkedArray) else [messages]
        )
        for chunk in chunks:
            data = _utf8_bytes(chunk)
            if data.size == 0:
                continue
            if not self.scan_always and _has_special(data):
                self.scan_always = True
            self._writable()[_hashes(data, STRIDE, 0)] = True

    def update(self, other: TrigramFilter) -> None:
        """Add every trigram of `other`, as after a merge of two partitions."""
        bits = self._writable()
        kind, others = other._bits
        if kind == "packed":
            others = np.unpackbits(others).view(np.bool_)
        np.logical_or(bits, others, out=bits)
        self.scan_always = self.scan_always or other.scan_always

    def may_contain(self, keyword: str) -> bool:
        """Return False only if no message can contain `keyword`.

        Matching ignores case as DuckDB's lower() does.
        """
        if self.scan_always:
            return True
        for run in _keyword_runs(keyword):
            if not any(self._all_set(probe) for probe in run):
                return False
        return True

    def save(self, path: Path, stamp: dict[str, object]) -> None:
        """Write the filter to `path` atomically, with the partition's stamp."""
        header = {
            "stamp": stamp,
            "hash_bits": HASH_BITS,
            "stride": STRIDE,
            "scan_always": self.scan_always,
        }
        body = zlib.compress(self._packed().tobytes(), 1)
        data = _MAGIC + json.dumps(header).encode() + b"\n" + body
        private_files.write_file_atomically(path, data)

    @classmethod
    def load(cls, path: Path, stamp: dict[str, object]) -> TrigramFilter | None:
        """Read a filter saved for a partition with this stamp, or None.

        None means that the file is missing, unreadable, of other
        parameters, or saved when the partition had other rows.
        """
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            if not raw.startswith(_MAGIC):
                raise ValueError("not a trigram filter file")
            line, body = raw[len(_MAGIC) :].split(b"\n", 1)
            header = json.loads(line)
            if header["stamp"] != stamp:
                _LOGGER.debug("Trigram filter %s is stale; rebuilding it", path)
                return None
            if (header["hash_bits"], header["stride"]) != (HASH_BITS, STRIDE):
                return None
            packed = np.frombuffer(zlib.decompress(body), dtype=np.uint8).copy()
            if packed.size * 8 != 1 << HASH_BITS:
                raise ValueError(f"{packed.size * 8} bits, expected {1 << HASH_BITS}")
            return cls(packed, bool(header["scan_always"]))
        except (ValueError, KeyError, TypeError, zlib.error) as exc:
            _LOGGER.warning("Ignoring trigram filter %s: %s", path, exc)
            return None


def union(filters: Iterable[TrigramFilter]) -> TrigramFilter:
    """Return a new filter with the trigrams of every filter given."""
    merged = TrigramFilter()
    for item in filters:
        merged.update(item)
    return merged


def sidecar_path(partition_file: Path) -> Path:
    """Return where the filter of a partition file is saved."""
    return partition_file.with_name(partition_file.name + SIDECAR_SUFFIX)


def _utf8_bytes(chunk: pa.Array) -> np.ndarray:
    """Return the UTF-8 bytes of a string array's values, without a copy."""
    if len(chunk) == 0:
        return np.empty(0, dtype=np.uint8)
    if pa.types.is_large_string(chunk.type):
        offset_type = np.int64
    elif pa.types.is_string(chunk.type):
        offset_type = np.int32
    else:
        raise TypeError(f"messages are {chunk.type}; expected a string column")
    _, offsets_buffer, data_buffer = chunk.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type)
    first = int(offsets[chunk.offset])
    last = int(offsets[chunk.offset + len(chunk)])
    if data_buffer is None:
        return np.empty(0, dtype=np.uint8)
    return np.frombuffer(data_buffer, dtype=np.uint8)[first:last]


def _has_special(data: np.ndarray) -> bool:
    if int(data.max()) < 0x80:
        return False
    raw = data.tobytes()
    return any(character in raw for character in SPECIAL_CHARACTERS)


def _hashes(data: np.ndarray, stride: int, start: int) -> np.ndarray:
    """Return the hash of the trigram at `start`, `start + stride`, ...

    Positions run while a whole trigram fits in `data`.
    """
    count = (data.size - 2 - start + stride - 1) // stride if data.size > 2 else 0
    if count <= 0:
        return np.empty(0, dtype=np.intp)
    # Trigrams are read as unaligned little-endian 4-byte words straight from
    # the buffer. The last one or two, whose word would run past the end,
    # are built from their three bytes.
    last_word = data.size - 4 - start
    words = min(count, last_word // stride + 1) if last_word >= 0 else 0
    values = np.empty(count, dtype=np.uint32)
    if words:
        view = np.ndarray(
            shape=(words,),
            dtype="<u4",
            buffer=data,
            offset=start,
            strides=(stride * data.strides[0],),
        )
        np.bitwise_and(view, _CASE_MASK, out=values[:words])
    for index in range(words, count):
        position = start + index * stride
        a, b, c = data[position : position + 3]
        values[index] = (int(a) | int(b) << 8 | int(c) << 16) & int(_CASE_MASK)
    values *= _MULTIPLIER
    values >>= _SHIFT
    # NumPy indexes with intp much faster than with uint32 (about 0.8 ms
    # against 2 ms for 700,000 indexes, NumPy 2.4), conversion included.
    return values.astype(np.intp)


@lru_cache(maxsize=256)
def _keyword_runs(keyword: str) -> tuple[tuple[np.ndarray, ...], ...]:
    """Return, per ASCII run of the keyword, the bit indexes per alignment.

    A partition may contain the keyword only if, for every run, all bits of at
    least one alignment are set. Runs too short for every alignment to have a
    trigram are left out, because they cannot rule anything out.
    """
    runs = []
    for run in _ascii_runs(keyword):
        data = np.frombuffer(run.encode("ascii"), dtype=np.uint8)
        if data.size < STRIDE + 2:
            continue
        probes = tuple(_hashes(data, STRIDE, start) for start in range(STRIDE))
        runs.append(probes)
    return tuple(runs)


def _ascii_runs(keyword: str) -> list[str]:
    runs = []
    current: list[str] = []
    for character in keyword:
        if ord(character) < 0x80:
            current.append(character)
        elif current:
            runs.append("".join(current))
            current = []
    if current:
        runs.append("".join(current))
    return runs
