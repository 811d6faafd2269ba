"""Text files of integer rows at MS MARCO's scale (`qidpidtriples.train.full.2.tsv`: ~400 million
lines of `qid pid pid`), read into compact NumPy arrays by blocks, each block checked and parsed
by vectorised NumPy (no Python object per line or per number), with errors that still name the
file and line. And `IdIndex`: the ids of an `id<TAB>text` file (MS MARCO's collection, 8.8 million
passages) with the byte offset of each line, as two sorted int64 arrays instead of a dict.

Why not pandas/pyarrow's CSV readers: they build the whole table (and text columns) in memory and
report a malformed row without its line number; a validator that reads 400 million rows must name
the one row that is wrong, and hold 12 bytes per triple, not 60.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from pathlib import Path

import numpy as np

BLOCK_BYTES = 1 << 22  # 4 MiB: ~170k MS MARCO id lines per block (~40 MB of temporaries)

_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True
_DIGIT = np.zeros(256, dtype=bool)
_DIGIT[48:58] = True


def _blocks(path: Path) -> Iterator[tuple[bytes, int]]:
    """(block of whole lines, number of the block's first line) of a file."""
    line = 1
    with open(path, "rb") as f:
        while True:
            block = f.read(BLOCK_BYTES)
            if not block:
                return
            if not block.endswith(b"\n"):
                block += f.readline()
            yield block, line
            line += block.count(b"\n")


def count_lines(path: Path) -> int:
    """Lines in a file (a last line without a newline counts)."""
    n = 0
    for block, _ in _blocks(path):
        n += block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
    return n


def _parse_block(block: bytes, first_line: int, width: int, path: Path, expected: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows of one block as an (n, width) int64 array and each row's line number; a line with
    other than `width` unsigned integers (blank lines excepted) is a ValueError naming it."""
    buf = np.frombuffer(block, dtype=np.uint8)
    space = _WHITESPACE[buf]
    newlines = np.flatnonzero(buf == 10)
    # a token starts where a non-space byte follows a space (or opens the block)
    starts = np.flatnonzero(~space & np.concatenate(([True], space[:-1])))
    line_of_token = np.searchsorted(newlines, starts)  # 0-based line within the block
    lines = len(newlines) + (0 if block.endswith(b"\n") else 1)
    per_line = np.bincount(line_of_token, minlength=lines)
    bad_count = (per_line != 0) & (per_line != width)
    bad_byte = ~(space | _DIGIT[buf])
    if bad_count.any() or bad_byte.any():
        worst = np.flatnonzero(bad_count)[:1].tolist()
        if bad_byte.any():
            worst.append(int(np.searchsorted(newlines, np.flatnonzero(bad_byte)[0])))
        raise ValueError(f"{path}:{first_line + min(worst)}: expected {expected}")
    values = np.fromstring(block, dtype=np.int64, sep=" ")  # noqa: NPY201 - text mode, validated above
    rows = values.reshape(-1, width)
    numbers = first_line + np.flatnonzero(per_line)
    return rows, numbers


def read_int_rows(path: Path, width: int, expected: str, convert=None) -> np.ndarray:
    """Every non-blank line of `path` as `width` integers: an (n, width) array. `convert(rows,
    numbers)` turns each block's int64 rows into what is stored (e.g. indices into an `IdIndex`,
    raising ValueError naming a line); the result is preallocated from a first pass that counts
    lines, so the peak is the result plus one block."""
    total = count_lines(path)
    out = None
    filled = 0
    for block, first in _blocks(path):
        rows, numbers = _parse_block(block, first, width, path, expected)
        stored = convert(rows, numbers) if convert is not None else rows
        if out is None:
            out = np.empty((total, width), dtype=stored.dtype)
        out[filled : filled + len(stored)] = stored
        filled += len(stored)
    if not filled:
        raise ValueError(f"{path}: no rows")
    return out[:filled]


class IdIndex:
    """The integer ids of an `id<TAB>text` file and the byte offset of each one's line, sorted by
    id (16 bytes per line: MS MARCO's 8.8M passages take 140 MB, not a 1 GB dict). One Python
    step per line (the file has millions of lines, not hundreds of millions)."""

    def __init__(self, path: Path, what: str):
        self.path, self.what = path, what
        ids, offsets = array("q"), array("q")
        position = 0
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    head, tab, _ = line.partition(b"\t")
                    if not tab or not head.strip().isdigit():
                        raise ValueError(f"{path}:{number}: expected {what} id<TAB>text")
                    ids.append(int(head))
                    offsets.append(position)
                position += len(line)
        all_ids = np.frombuffer(ids, dtype=np.int64)
        order = np.argsort(all_ids, kind="stable")
        self.ids = all_ids[order]
        self.offsets = np.frombuffer(offsets, dtype=np.int64)[order]
        repeated = np.flatnonzero(self.ids[1:] == self.ids[:-1])
        if len(repeated):
            raise ValueError(f"{path}: {what} id {int(self.ids[repeated[0]])} is on more than one line")

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Where each id is in the index (-1: not there)."""
        if not len(self.ids):
            return np.full(len(ids), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        return np.where(self.ids[at] == ids, at, -1)

    def offset(self, position: int) -> int:
        return int(self.offsets[position])
