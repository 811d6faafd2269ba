"""Training triples in the formats researchers have (`trainables/data/triples.py`): JSONL, TSV with
and without a header (MS MARCO's text triples), CSV and Parquet with a column mapping, an MS
MARCO folder of id triples; all read the same triples; malformed rows name file and line; the
contrastive trainable trains from a TSV; `validate` refuses a broken file in one line."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest

from tests.conftest import run_here
from trainables.data.triples import head_triples, open_triples

ROWS = [
    ("what is a cat", "a cat is a small feline, kept as a pet", "the stock market fell"),
    ('quotes "inside", commas', "tabs\tare not here but commas, are", "négatif"),
    ("third query", "third positive", "third negative"),
]


def _write_all(tmp_path):
    (tmp_path / "t.jsonl").write_text(
        "".join(json.dumps({"q": q, "p": p, "n": n}) + "\n" for q, p, n in ROWS), encoding="utf-8"
    )
    with open(tmp_path / "small.tsv", "w", encoding="utf-8", newline="") as f:  # MS MARCO: no header
        for q, p, n in ROWS:
            f.write(f"{q}\t{p.replace(chr(9), ' ')}\t{n}\n")
    with open(tmp_path / "t.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "anchor", "pos", "neg"])
        for i, (q, p, n) in enumerate(ROWS):
            w.writerow([i, q, p, n])
    pd.DataFrame({"a": [r[0] for r in ROWS], "b": [r[1] for r in ROWS], "c": [r[2] for r in ROWS]}).to_parquet(
        tmp_path / "t.parquet"
    )


def test_every_format_reads_the_same_triples(tmp_path):
    _write_all(tmp_path)
    expected = [(q, p.replace("\t", " "), n) for q, p, n in ROWS]
    assert list(open_triples(tmp_path / "t.jsonl", ["q", "p", "n"])) == ROWS
    assert list(open_triples(tmp_path / "small.tsv")) == expected
    assert list(open_triples(tmp_path / "t.csv", ["anchor", "pos", "neg"])) == ROWS
    assert list(open_triples(tmp_path / "t.parquet", ["a", "b", "c"])) == ROWS
    t = open_triples(tmp_path / "t.csv", ["anchor", "pos", "neg"])
    assert len(t) == 3 and t[-1] == ROWS[2] and t[1:] == ROWS[1:]


def _msmarco(tmp_path):
    """An MS MARCO folder with its passages and training queries (the triples are each test's)."""
    folder = tmp_path / "msmarco"
    folder.mkdir()
    (folder / "collection.tsv").write_text("0\tpassage zero\n7\tpassage seven\n3\tpassage three\n")
    (folder / "queries.train.tsv").write_text("100\tfirst query\n200\tsecond query\n")
    return folder


def test_msmarco_id_triples_resolve_through_collection_and_queries(tmp_path):
    folder = _msmarco(tmp_path)
    (folder / "qidpidtriples.train.full.2.tsv").write_text("100\t7\t0\n200\t3\t7\n")
    assert list(open_triples(folder)) == [
        ("first query", "passage seven", "passage zero"),
        ("second query", "passage three", "passage seven"),
    ]
    (folder / "qidpidtriples.train.full.2.tsv").write_text("100\t7\t0\n200\t4\t7\n")
    with pytest.raises(ValueError, match=r"qidpidtriples.train.full.2.tsv:2: passage id 4 is not in collection.tsv"):
        open_triples(folder)
    (folder / "qidpidtriples.train.full.2.tsv").write_text("100 7\n")
    with pytest.raises(ValueError, match=r":1: expected three ids"):
        open_triples(folder)


def test_msmarco_qrels_and_hard_negatives(tmp_path):
    folder = _msmarco(tmp_path)
    (folder / "qrels.train.tsv").write_text("100\t0\t7\t1\n200\t0\t3\t1\n200\t0\t0\t1\n")
    (folder / "hard-negatives.tsv").write_text("100\t0\n200\t7\n100\t3\n")
    assert list(open_triples(folder)) == [
        ("first query", "passage seven", "passage zero"),
        ("second query", "passage three", "passage seven"),  # the first relevant passage in the qrels
        ("first query", "passage seven", "passage three"),
    ]
    (folder / "hard-negatives.tsv").unlink()
    (folder / "msmarco-hard-negatives.jsonl").write_text(
        json.dumps({"qid": 100, "pos": [7], "neg": {"bm25": [0, 3], "dense": [3]}}) + "\n"
    )
    assert [t[2] for t in open_triples(folder)] == ["passage zero", "passage three", "passage three"]
    (folder / "msmarco-hard-negatives.jsonl").write_text(json.dumps({"qid": 300, "neg": {"bm25": [0]}}) + "\n")
    with pytest.raises(ValueError, match=r"negatives.jsonl:1: query 300 has no relevant passage in qrels.train.tsv"):
        open_triples(folder)


@pytest.mark.parametrize(
    "name,content,columns,message",
    [
        ("a.tsv", "q\tp\tn\nq only\tp\n", None, r"a.tsv:2: expected at least 3 tab-separated columns, got 2"),
        ("b.tsv", "q\tp\tn\n\nq\t \tn\n", None, r"b.tsv:3: an empty query, positive or negative"),
        ("c.csv", "x,y,z\n1,2,3\n", None, r"c.csv:1: expected a header with columns query, positive, negative"),
        ("d.csv", "anchor,pos\n1,2\n", ["anchor", "pos", "neg"], r"d.csv:1: the header has no column\(s\) neg"),
        ("e.jsonl", '{"query": "q", "positive": "p"}\n', None, r"e.jsonl:1: missing or non-string key\(s\) negative"),
        ("f.txt.gz", "x", None, r"unknown triples format"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, name, content, columns, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=message):
        open_triples(tmp_path / name, columns)


def test_parquet_errors_name_the_file(tmp_path):
    pd.DataFrame({"query": ["q", None], "positive": ["p", "p"], "negative": ["n", "n"]}).to_parquet(
        tmp_path / "a.parquet"
    )
    with pytest.raises(ValueError, match=r"a.parquet: row 2: column query is empty"):
        open_triples(tmp_path / "a.parquet")
    with pytest.raises(ValueError, match=r"a.parquet: no column\(s\) anchor"):
        open_triples(tmp_path / "a.parquet", ["anchor", "positive", "negative"])
    (tmp_path / "b.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match=r"b.parquet: not a readable Parquet file"):
        open_triples(tmp_path / "b.parquet")


def test_preflight_head_of_any_format_is_jsonl(tmp_path):
    _write_all(tmp_path)
    head = head_triples(str(tmp_path / "t.parquet"), 2, tmp_path / "head.jsonl", ["a", "b", "c"])
    assert list(open_triples(head)) == ROWS[:2]


def test_contrastive_trains_from_msmarco_text_triples_and_validate_refuses_a_broken_one(tmp_path):
    from trainables import contrastive_isotropy as ci
    from trainables.data.synthetic_text import triples
    from trainables.runtime.session import LocalSession

    with open(tmp_path / "train.tsv", "w", encoding="utf-8") as f:
        for q, p, n in triples(48, seed=0):
            f.write(f"{q}\t{p}\t{n}\n")
    cfg = {
        "train_data": str(tmp_path / "train.tsv"),
        "batch_size": 8,
        "max_steps": 2,
        "warmup_steps": 1,
        "output_dim": 16,
        "max_seq_length": 16,
    }
    final = ci.train(cfg, LocalSession(tmp_path / "trial"))
    assert final["step"] == 2 and final["train/loss"] > 0
    meta = json.loads((tmp_path / "trial" / "metadata.json").read_text())
    assert meta["data"]["train_triples"] == 48
    with open(tmp_path / "train.tsv", "a", encoding="utf-8") as f:
        f.write("a query\tonly a positive\n")
    (tmp_path / "study.yaml").write_text(
        "name: tsv\nstages:\n  train:\n    trainable: contrastive_isotropy\n    config:\n"
        "      train_data: train.tsv\n      batch_size: 8\n"
    )
    done = run_here("validate", "study.yaml", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.strip()]
    assert "train.tsv:49: expected at least 3 tab-separated columns, got 2" in line and "Traceback" not in done.stderr


def test_tsv_is_tab_separated_text_not_csv(tmp_path):
    """MS MARCO passages may start with a quote or hold an unbalanced one: a TSV row is split on
    tabs only, so both keep their quotes and no tab is swallowed."""
    rows = [
        ('"quoted" query', '"Cats" are small felines', "plain negative"),
        ("unbalanced", 'a 6" pipe, and "more', "the negative"),
        ("third", "p", "n"),
    ]
    (tmp_path / "small.tsv").write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    assert list(open_triples(tmp_path / "small.tsv")) == rows
    (tmp_path / "named.tsv").write_text(
        "query\tpositive\tnegative\n" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8"
    )
    assert list(open_triples(tmp_path / "named.tsv")) == rows


def test_id_rows_are_parsed_by_block_with_line_numbers(tmp_path, monkeypatch):
    """The block parser of MS MARCO's id triples: rows across block edges, blank lines, and the
    line of every kind of error (too few ids, a letter, a missing id)."""
    from trainables.data import int_rows

    monkeypatch.setattr(int_rows, "BLOCK_BYTES", 16)  # many blocks, lines cut at block edges
    folder = _msmarco(tmp_path)
    lines = ["100\t7\t0", "", "200 3  7", "100\t0\t3", "200\t7\t0\r"]
    (folder / "qidpidtriples.train.full.2.tsv").write_text("\n".join(lines) + "\n")
    got = list(open_triples(folder))
    assert [t[0] for t in got] == ["first query", "second query", "first query", "second query"]
    assert got[2] == ("first query", "passage zero", "passage three")
    for bad, message in [
        ("100\t7\t0\n\n200\t3\n", r":3: expected three ids"),
        ("100\t7\t0\n100\t7\t0\n100\t7\tx\n", r":3: expected three ids"),
        ("100\t7\t0\n100\t7\t0\n100\t7\t0\n100\t7\t0\n100\t7\t0\n300\t7\t0\n", r":6: query id 300 is not in"),
        ("100 7 0 100 7 0\n", r":1: expected three ids"),
    ]:
        (folder / "qidpidtriples.train.full.2.tsv").write_text(bad)
        with pytest.raises(ValueError, match=message):
            open_triples(folder)
    (folder / "collection.tsv").write_text("0\tpassage zero\n7\tpassage seven\n0\tagain\n")
    with pytest.raises(ValueError, match=r"collection.tsv: passage id 0 is on more than one line"):
        open_triples(folder)
