"""Retrieval data: BEIR folders (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`), read
without torch (`validate` checks them); every error names the file and line. Training triples:
`triples.py`."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class BeirDataset:
    name: str
    corpus: dict[str, str]  # doc id -> "title text"
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def json_row(line: str | bytes, where: str, required: tuple[str, ...] | list[str]) -> dict:
    """One JSONL line as an object with string values at `required`; ValueError naming `where`
    (file:line) otherwise."""
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where}: not valid JSON ({getattr(exc, 'msg', exc)})") from None
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    missing = [k for k in required if not isinstance(row.get(k), str)]
    if missing:
        raise ValueError(f"{where}: missing or non-string key(s) {', '.join(missing)}; expected {', '.join(required)}")
    return row


def _jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    if not path.exists():
        raise ValueError(f"{path}: file not found")
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            rows.append(json_row(line, f"{path}:{i}", required))
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def load_beir(folder: str | Path, split: str = "test") -> BeirDataset:
    """A BEIR folder (or `synthetic:beir?...`); errors name the file and line."""
    path, queries, qrels = load_queries_and_qrels(folder, split)
    corpus = {
        r["_id"]: (f"{r['title']} {r['text']}" if r.get("title") else r["text"])
        for r in _jsonl(path / "corpus.jsonl", ("_id", "text"))
    }
    return BeirDataset(str(folder) if str(folder).startswith("synthetic:") else path.name, corpus, queries, qrels)


def beir_path(folder: str | Path) -> Path:
    """The folder of a BEIR source (`synthetic:beir?...` materialised in a cache folder)."""
    if str(folder).startswith("synthetic:"):
        from trainables.data.synthetic_text import beir_folder

        return beir_folder(str(folder))
    return Path(folder)


def load_queries_and_qrels(folder: str | Path, split: str = "test") -> tuple[Path, dict, dict]:
    """(folder, queries, qrels) of a BEIR source, without its corpus; errors name file and line.
    Only judged queries that have a text are kept (trec_eval's semantics)."""
    folder = beir_path(folder)
    if not (folder / "corpus.jsonl").exists():
        raise ValueError(f"{folder / 'corpus.jsonl'}: file not found")
    queries = {r["_id"]: r["text"] for r in _jsonl(folder / "queries.jsonl", ("_id", "text"))}
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.exists():
        raise ValueError(f"{qrels_path}: file not found (BEIR layout: qrels/<split>.tsv)")
    qrels: dict[str, dict[str, int]] = {}
    with open(qrels_path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise ValueError(f"{qrels_path}:1: expected the header query-id, corpus-id, score")
        for i, row in enumerate(reader, 2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) < 3:
                raise ValueError(f"{qrels_path}:{i}: expected 3 tab-separated columns")
            try:
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
            except ValueError:
                raise ValueError(f"{qrels_path}:{i}: score {row[2]!r} is not an integer") from None
    # trec_eval semantics: a judged query without a text cannot be run and is not evaluated.
    qrels = {q: d for q, d in qrels.items() if q in queries}
    if not qrels:
        raise ValueError(f"{qrels_path}: no judged query id is in {folder / 'queries.jsonl'}")
    return folder, queries, qrels
