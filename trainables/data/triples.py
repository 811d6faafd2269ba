"""Training triples (query, positive, negative) in the formats researchers have, read without
holding the texts in memory, checked row by row.

`open_triples(source, columns)` returns a `Triples` sequence (`len`, `t[i]`, `t[a:b]`) of
(query, positive, negative) strings, from:

- JSONL of objects (`.jsonl`): keys `query`, `positive`, `negative`, or the three `columns`;
- TSV / CSV (`.tsv`, `.csv`; uncompressed): three columns by name (a header line naming them)
  or by position (`columns: [0, 1, 2]`, no header). A `.tsv` without
  `columns` is MS MARCO's `triples.train.small.tsv` layout: query, positive, negative texts by
  position, no header (unless its first line is exactly `query positive negative`);
- Parquet (`.parquet`): three columns by name (default `query`, `positive`, `negative`), memory
  mapped;
- an MS MARCO folder: `collection.tsv` (pid, passage), `queries.train.tsv` (qid, query; or
  `queries.tsv`) and either an id-triples file (`qidpidtriples.train.full.2.tsv`, or the one
  `*triples*.tsv` there: qid, positive pid, negative pid) or `qrels.train.tsv` with a hard
  negatives file (`*negatives*.tsv`: qid, negative pid; or sentence-transformers'
  `*negatives*.jsonl`), resolved by id;
- `synthetic:triples?n=..` (tests, the CPU profile).

TSV files are tab-separated text, not CSV: no quoting (a passage that starts with `"` keeps it,
and a stray quote never swallows a tab); CSV files follow CSV's quoting rules.

Text files are indexed in one pass (the byte offset and line number of each row, 12 bytes per
row in compact arrays: 480 MB for MS MARCO's 40M text triples, against 27 GB of text), and a row
is read by seeking to it when it is asked for; every row is checked in that pass, so a malformed
row is a one-line error naming file and line at `validate`. MS MARCO id triples are parsed by
blocks with NumPy (`int_rows.py`) and held as positions in sorted id indices, 12 bytes per
triple (every id checked against the collection and the queries), passages read by offset.
bench/README.md has the measured memory at 10 million lines. Torch-free: `validate` uses it.
"""

from __future__ import annotations

import csv
import io
import json
from array import array
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trainables.data.int_rows import IdIndex, read_int_rows
from trainables.data.retrieval import json_row

DEFAULT_COLUMNS = ("query", "positive", "negative")
MSMARCO_TRIPLES = "qidpidtriples.train.full.2.tsv"


class Triples(Sequence):
    """(query, positive, negative) by index; slices give lists."""

    def __init__(self, n: int, get, describe: str):
        self._n, self._get, self.describe = n, get, describe

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._get(j) for j in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self._get(i)


def open_triples(source: str | Path, columns: Sequence[str | int] | None = None) -> Triples:
    """The triples of `source` (see the module doc); ValueError naming file and line."""
    text = str(source)
    if text.startswith("synthetic:"):
        from trainables.data.synthetic_text import triples_from_uri

        rows = triples_from_uri(text)
        return Triples(len(rows), rows.__getitem__, text)
    path = Path(source)
    if not path.exists():
        raise ValueError(f"{path}: file not found")
    if columns is not None and len(columns) != 3:
        raise ValueError(f"{path}: triple_columns must name 3 columns (query, positive, negative), got {columns}")
    if path.is_dir():
        return _msmarco(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _parquet(path, columns or DEFAULT_COLUMNS)
    if suffix in (".tsv", ".csv", ".txt"):
        return _delimited(path, "," if suffix == ".csv" else "\t", columns)
    if suffix in (".jsonl", ".json"):
        return _jsonl(path, columns or DEFAULT_COLUMNS)
    raise ValueError(f"{path}: unknown triples format; expected .jsonl, .tsv, .csv, .parquet or an MS MARCO folder")


def _read_line(path: Path, offset: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.readline()


def _jsonl(path: Path, columns: Sequence[str | int]) -> Triples:
    names = [str(c) for c in columns]

    def parse(line: bytes, number: int) -> tuple[str, str, str]:
        row = json_row(line, f"{path}:{number}", names)
        return row[names[0]], row[names[1]], row[names[2]]

    offsets, numbers = _index(path, parse, header=False)
    return Triples(len(offsets), lambda i: parse(_read_line(path, offsets[i]), int(numbers[i])), f"{path} (JSONL)")


def _index(path: Path, parse, header: bool) -> tuple[np.ndarray, np.ndarray]:
    """Byte offsets (int64) and line numbers (uint32) of the non-empty rows of a text file, each
    checked by `parse(line, number)` on the way (the header line, if any, skipped)."""
    offsets, numbers = array("q"), array("I")
    position = 0
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if line.strip() and not (header and number == 1):
                parse(line, number)
                offsets.append(position)
                numbers.append(number)
            position += len(line)
    if not offsets:
        raise ValueError(f"{path}: no rows")
    return np.frombuffer(offsets, dtype=np.int64), np.frombuffer(numbers, dtype=np.uint32)


def _cells(line: str, delimiter: str) -> list[str]:
    """A row's cells: a TSV line split on tabs (no quoting); a CSV line by CSV's rules."""
    if delimiter == "\t":
        return line.rstrip("\r\n").split("\t")
    return next(csv.reader(io.StringIO(line), delimiter=delimiter), [])


def _delimited(path: Path, delimiter: str, columns: Sequence[str | int] | None) -> Triples:
    kind = "tab" if delimiter == "\t" else "comma"
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        first = _cells(f.readline(), delimiter)
    by_name = columns is not None and all(isinstance(c, str) for c in columns)
    if columns is None:
        if [c.strip() for c in first] == list(DEFAULT_COLUMNS):
            columns, by_name = DEFAULT_COLUMNS, True
        elif delimiter == ",":
            raise ValueError(
                f"{path}:1: expected a header with columns {', '.join(DEFAULT_COLUMNS)} (or triple_columns)"
            )
        else:
            columns = (0, 1, 2)  # MS MARCO's triples.train.small.tsv: no header
    if by_name:
        header = [c.strip() for c in first]
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"{path}:1: the header has no column(s) {', '.join(map(str, missing))}; it has {header}")
        positions = [header.index(c) for c in columns]
    else:
        positions = [int(c) for c in columns]
    width = max(positions) + 1

    def parse(line: bytes, number: int) -> tuple[str, str, str]:
        try:
            cells = _cells(line.decode("utf-8"), delimiter)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ValueError(f"{path}:{number}: unreadable row ({exc})") from None
        if len(cells) < width:
            raise ValueError(f"{path}:{number}: expected at least {width} {kind}-separated columns, got {len(cells)}")
        values = tuple(cells[p] for p in positions)
        if not all(v.strip() for v in values):
            raise ValueError(f"{path}:{number}: an empty query, positive or negative")
        return values  # type: ignore[return-value]

    offsets, numbers = _index(path, parse, header=by_name)
    return Triples(len(offsets), lambda i: parse(_read_line(path, offsets[i]), int(numbers[i])), f"{path} ({kind})")


def _parquet(path: Path, columns: Sequence[str | int]) -> Triples:
    import pyarrow.parquet as pq

    names = [str(c) for c in columns]
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow's own error types: one line naming the file
        raise ValueError(f"{path}: not a readable Parquet file ({' '.join(str(exc).split())[:120]})") from None
    missing = [c for c in names if c not in schema.names]
    if missing:
        raise ValueError(f"{path}: no column(s) {', '.join(missing)}; it has {schema.names} (set triple_columns)")
    table = pq.read_table(path, columns=names, memory_map=True)
    cols = [table.column(c) for c in names]
    for name, col in zip(names, cols):
        if col.null_count:
            first = next(i for i, v in enumerate(col.is_null().to_pylist()) if v)
            raise ValueError(f"{path}: row {first + 1}: column {name} is empty (null)")

    def get(i: int) -> tuple[str, str, str]:
        return tuple(str(c[i].as_py()) for c in cols)  # type: ignore[return-value]

    return Triples(table.num_rows, get, f"{path} (Parquet)")


def _msmarco(folder: Path) -> Triples:
    collection = folder / "collection.tsv"
    queries = next((folder / n for n in ("queries.train.tsv", "queries.tsv") if (folder / n).exists()), None)
    found = [folder / MSMARCO_TRIPLES] if (folder / MSMARCO_TRIPLES).exists() else sorted(folder.glob("*triples*.tsv"))
    qrels = folder / "qrels.train.tsv"
    negatives = sorted(folder.glob("*negatives*.tsv")) + sorted(folder.glob("*negatives*.jsonl"))
    by_ids = len(found) == 1
    by_negatives = not found and qrels.exists() and len(negatives) == 1
    if not collection.exists() or queries is None or not (by_ids or by_negatives):
        raise ValueError(
            f"{folder}: an MS MARCO folder needs collection.tsv, queries.train.tsv (or queries.tsv) and either one "
            f"id-triples file ({MSMARCO_TRIPLES} or *triples*.tsv) or qrels.train.tsv with one *negatives*.tsv / "
            f"*negatives*.jsonl file; found {sorted(p.name for p in folder.iterdir())}"
        )
    ids = _IdCheck(IdIndex(collection, "passage"), IdIndex(queries, "query"), queries.name)
    table = _id_triples(found[0], ids) if by_ids else _negative_triples(qrels, negatives[0], ids)

    def text(path: Path, index: IdIndex, position: int) -> str:
        return _read_line(path, index.offset(position)).decode("utf-8").rstrip("\r\n").partition("\t")[2]

    def get(i: int) -> tuple[str, str, str]:
        q, pos, neg = table[i].tolist()
        return (
            text(queries, ids.queries, q),
            text(collection, ids.passages, pos),
            text(collection, ids.passages, neg),
        )

    return Triples(len(table), get, f"{folder} (MS MARCO ids)")


class _IdCheck:
    """Every id a triple uses must be in the collection or the queries (an error names the
    line); triples are stored as positions in the two indices (int32: 12 bytes per triple)."""

    def __init__(self, passages: IdIndex, queries: IdIndex, queries_name: str):
        self.passages, self.queries, self.queries_name = passages, queries, queries_name

    def positions(self, rows: np.ndarray, numbers: np.ndarray, where: Path) -> np.ndarray:
        """(n, 3) ids (qid, positive pid, negative pid) -> (n, 3) int32 positions."""
        out = np.empty(rows.shape, dtype=np.int32)
        out[:, 0] = self.queries.positions(rows[:, 0])
        out[:, 1:] = self.passages.positions(rows[:, 1:].ravel()).reshape(-1, 2)
        missing = np.argwhere(out < 0)
        if len(missing):
            row, column = (int(v) for v in missing[0])
            what = (
                f"query id {rows[row, 0]} is not in {self.queries_name}"
                if column == 0
                else (f"passage id {rows[row, column]} is not in collection.tsv")
            )
            raise ValueError(f"{where}:{int(numbers[row])}: {what}")
        return out


def _id_triples(path: Path, check: _IdCheck) -> np.ndarray:
    """qid, positive pid, negative pid per line (MS MARCO's qidpidtriples), read by blocks."""
    return read_int_rows(
        path,
        3,
        "three ids: qid, positive pid, negative pid",
        lambda rows, numbers: check.positions(rows, numbers, path),
    )


def _positives(qrels: Path) -> dict[int, int]:
    """The first relevant passage of every query of a qrels file (`qid 0 pid relevance`)."""
    positive: dict[int, int] = {}
    with open(qrels, "rb") as f:
        for number, line in enumerate(f, 1):
            cells = line.split()
            if not cells:
                continue
            if len(cells) != 4 or not all(c.lstrip(b"-").isdigit() for c in cells):
                raise ValueError(f"{qrels}:{number}: expected qid, 0, pid, relevance")
            if int(cells[3]) > 0:
                positive.setdefault(int(cells[0]), int(cells[2]))
    return positive


def _negative_lines(negatives: Path):
    """(line number, qid, [negative pids]) of a hard-negatives file: `qid<TAB>pid` lines, or
    sentence-transformers' JSONL (`{"qid", "neg": {system: [pids]}}`, every system's in order)."""
    with open(negatives, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            if negatives.suffix == ".jsonl":
                try:
                    row = json.loads(line)
                    yield number, int(row["qid"]), [int(p) for system in row["neg"].values() for p in system]
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    raise ValueError(
                        f'{negatives}:{number}: expected {{"qid": .., "neg": {{system: [pids]}}}} ({exc})'
                    ) from None
            else:
                cells = line.split()
                if len(cells) != 2 or not all(c.isdigit() for c in cells):
                    raise ValueError(f"{negatives}:{number}: expected qid<TAB>negative pid")
                yield number, int(cells[0]), [int(cells[1])]


def _negative_triples(qrels: Path, negatives: Path, check: _IdCheck) -> np.ndarray:
    """One triple per (query, hard negative): the query, its first relevant passage in the qrels
    (MS MARCO's qrels.train.tsv), the negative; stored as index positions (see `_IdCheck`)."""
    positive = _positives(qrels)
    flat, numbers = array("q"), array("q")
    for number, qid, negs in _negative_lines(negatives):
        if qid not in positive:
            raise ValueError(f"{negatives}:{number}: query {qid} has no relevant passage in {qrels.name}")
        for neg in negs:
            flat.extend((qid, positive[qid], neg))
            numbers.append(number)
    if not numbers:
        raise ValueError(f"{negatives}: no rows")
    rows = np.frombuffer(flat, dtype=np.int64).reshape(-1, 3)
    return check.positions(rows, np.frombuffer(numbers, dtype=np.int64), negatives)


def head_triples(source: str | None, n: int, out: Path, columns: Sequence[str | int] | None = None) -> str | None:
    """The first `n` triples of a source as JSONL in `out` (for pre-flight runs); a source that is
    not on this machine is stood in for by synthetic triples."""
    if source is None or str(source).startswith("synthetic:"):
        return source
    if not Path(source).exists():
        return f"synthetic:triples?n={n}&seed={len(out.name)}"
    triples = open_triples(source, columns)
    with open(out, "w", encoding="utf-8") as f:
        for query, positive, negative in triples[:n]:
            f.write(json.dumps({"query": query, "positive": positive, "negative": negative}) + "\n")
    return str(out)
