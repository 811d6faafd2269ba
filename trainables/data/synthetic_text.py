"""Seeded synthetic text for retrieval tests, pre-flight runs and the CPU-sized study profile.

Topics are small vocabularies of real English words. A document is a sentence about one topic
(its words, in a random order, plus filler words shared by all topics); a query asks about a
topic with two of its words. Retrieval is learnable (the relevant documents share rare words
with the query) and not trivial (filler words and shared templates).

- triples `synthetic:triples?n=200&seed=0`: {query, positive (same topic), negative (another)};
- BEIR folder `synthetic:beir?docs=200&queries=40&seed=1`: corpus, queries and graded qrels
  (2: the document the query was written from, 1: other documents of its topic), materialised
  into a cache folder on first use.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np

TOPICS = [
    "river bridge water boat fishing bank flood stream current shore",
    "guitar piano melody concert orchestra rhythm song violin drum chord",
    "volcano lava eruption magma crater ash mountain tectonic basalt",
    "bakery bread flour oven yeast dough crust pastry butter loaf",
    "satellite orbit rocket launch astronaut telescope planet moon gravity",
    "election vote parliament senator ballot campaign policy minister law",
    "football goal striker referee stadium league match penalty coach",
    "virus vaccine immune antibody infection cell protein fever doctor",
    "forest oak pine moss deer owl trail canopy fern timber",
    "market stock investor price bond dividend trader share inflation",
    "castle knight king siege tower sword moat armor queen",
    "ocean whale coral reef tide shark dolphin wave salt",
]
FILLER = "the a of and in on with for about this that some many new old".split()


def _topics():
    return [t.split() for t in TOPICS]


def _doc(rng: np.random.Generator, words: list[str]) -> str:
    chosen = list(rng.choice(words, size=5, replace=False)) + list(rng.choice(FILLER, size=4))
    rng.shuffle(chosen)
    return " ".join(chosen)


def triples(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    rng = np.random.default_rng(seed)
    topics = _topics()
    out = []
    for _ in range(n):
        t, other = rng.choice(len(topics), size=2, replace=False)
        q_words = rng.choice(topics[t], size=2, replace=False)
        out.append((f"what about {q_words[0]} and {q_words[1]}", _doc(rng, topics[t]), _doc(rng, topics[other])))
    return out


def beir(docs: int, queries: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    topics = _topics()
    doc_topic = rng.integers(0, len(topics), size=docs)
    corpus = {f"d{i}": _doc(rng, topics[t]) for i, t in enumerate(doc_topic)}
    qs, qrels = {}, {}
    for j in range(queries):
        src = int(rng.integers(0, docs))
        words = corpus[f"d{src}"].split()
        topic_words = [w for w in words if w in topics[doc_topic[src]]]
        qs[f"q{j}"] = f"what about {topic_words[0]} and {topic_words[1]}"
        qrels[f"q{j}"] = {f"d{i}": (2 if i == src else 1) for i in np.flatnonzero(doc_topic == doc_topic[src])}
    return {"corpus": corpus, "queries": qs, "qrels": qrels}


def _args(uri: str, kind: str, defaults: dict) -> dict:
    body = uri[len("synthetic:") :]
    name, _, query = body.partition("?")
    if name != kind:
        raise ValueError(f"{uri}: expected synthetic:{kind}?...")
    args = dict(defaults)
    for key, value in parse_qsl(query):
        if key not in args:
            raise ValueError(f"{uri}: unknown parameter {key!r}; expected: {', '.join(defaults)}")
        try:
            args[key] = int(value)
        except ValueError:
            raise ValueError(f"{uri}: parameter {key!r} must be an integer, got {value!r}") from None
    return args


def triples_from_uri(uri: str) -> list[tuple[str, str, str]]:
    a = _args(uri, "triples", {"n": 200, "seed": 0})
    return triples(a["n"], a["seed"])


def write_beir(folder: Path, data: dict) -> Path:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w") as f:
        for i, text in data["corpus"].items():
            f.write(json.dumps({"_id": i, "title": "", "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w") as f:
        for i, text in data["queries"].items():
            f.write(json.dumps({"_id": i, "text": text}) + "\n")
    with open(folder / "qrels" / "test.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q, docs in data["qrels"].items():
            for d, r in docs.items():
                f.write(f"{q}\t{d}\t{r}\n")
    return folder


def beir_folder(uri: str) -> Path:
    """Materialise `synthetic:beir?...` into a cache folder (same URI, same folder)."""
    a = _args(uri, "beir", {"docs": 200, "queries": 40, "seed": 0})
    folder = Path(tempfile.gettempdir()) / f"synthetic-beir-d{a['docs']}-q{a['queries']}-s{a['seed']}"
    if not (folder / "qrels" / "test.tsv").exists():
        tmp = Path(tempfile.mkdtemp(prefix="synthetic-beir-"))
        write_beir(tmp, beir(a["docs"], a["queries"], a["seed"]))
        try:
            tmp.rename(folder)
        except OSError:  # another process made it first
            pass
    return folder
