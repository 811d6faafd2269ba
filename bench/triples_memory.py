"""Memory of reading training triples at MS MARCO's scale (issue 27): the peak resident memory of
`open_triples` on generated files of `--lines` lines, each in a fresh process, with today's reader
and, with `--old FILE`, an older `trainables/data/triples.py` side by side.

    python bench/triples_memory.py [--lines 10000000] [--old /tmp/old_triples.py] \
        [--json bench/results/triples_memory.json]

- ids: an MS MARCO folder of `--lines` id triples (`qidpidtriples.train.full.2.tsv`, qid pid pid
  over 500,000 queries and 1,000,000 passages, as in the real file's ratio of lines to ids) with
  its collection.tsv and queries.train.tsv;
- text: a `triples.train.small.tsv` of `--lines` short text triples (query, positive, negative).

Peak = the largest resident memory of the process while the file is read (sampled every 5 ms)
less its resident memory after the imports: what reading the file adds. Measured at `--lines`
and at a fifth of it: the difference is the cost per line (the fixed part, e.g. the collection's
index, cancels), and the extrapolation to the real files (397,768,673 id lines; 39,780,811 text
lines) is peak(lines) + per line x (real - lines). The real collection has 8.8M passages, not
1M: its index adds ~140 MB to the id figure (16 bytes a passage) today, ~1 GB with a dict of
Python ints.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL_LINES = {"ids": 397_768_673, "text": 39_780_811}
QUERIES, PASSAGES = 500_000, 1_000_000

MEASURE = r"""
import importlib.util, json, sys, threading, time, psutil
sys.path.insert(0, {root!r})
import numpy  # imports first: measured apart
import trainables.data.retrieval
path = {impl!r}
if path:
    spec = importlib.util.spec_from_file_location("triples_under_test", path)
    module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
else:
    from trainables.data import triples as module
process = psutil.Process()
base = process.memory_info().rss / 1024
peak, running = base, True
def sample():  # resident memory every 5 ms while the file is read
    global peak
    while running:
        peak = max(peak, process.memory_info().rss / 1024)
        time.sleep(0.005)
sampler = threading.Thread(target=sample, daemon=True); sampler.start()
t0 = time.perf_counter()
t = module.open_triples({source!r})
seconds = time.perf_counter() - t0
first, last = t[0], t[len(t) - 1]
running = False; sampler.join()
held = process.memory_info().rss / 1024
peak = max(peak, held)
print("RESULT " + json.dumps({{"rows": len(t), "peak_mib": (peak - base) / 1024, "held_mib": (held - base) / 1024,
                              "seconds": seconds, "first": list(first)}}))
"""


def generate(folder: Path, lines: int) -> dict[str, str]:
    """The MS MARCO folder of id triples and the text triples file; returns their paths."""
    rng = random.Random(lines)
    folder.mkdir(parents=True, exist_ok=True)
    ids = folder / "msmarco"
    ids.mkdir(parents=True, exist_ok=True)
    with open(ids / "collection.tsv", "w") as f:
        f.writelines(f"{p}\tpassage number {p}\n" for p in range(PASSAGES))
    with open(ids / "queries.train.tsv", "w") as f:
        f.writelines(f"{q}\tquery number {q}\n" for q in range(QUERIES))
    block = 1_000_000
    with open(ids / "qidpidtriples.train.full.2.tsv", "w") as f:
        for start in range(0, lines, block):
            n = min(block, lines - start)
            f.write(
                "".join(
                    f"{rng.randrange(QUERIES)}\t{rng.randrange(PASSAGES)}\t{rng.randrange(PASSAGES)}\n"
                    for _ in range(n)
                )
            )
    text = folder / "triples.train.small.tsv"
    with open(text, "w") as f:
        for start in range(0, lines, block):
            n = min(block, lines - start)
            f.write("".join(f"query {i}\tthe positive passage {i}\tnegative {i}\n" for i in range(start, start + n)))
    return {"ids": str(ids), "text": str(text)}


def measure(source: str, impl: str | None) -> dict:
    code = MEASURE.format(root=str(ROOT), impl=impl or "", source=source)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=7200)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        return {"error": (done.stderr or done.stdout)[-500:]}
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--old", help="an older trainables/data/triples.py to measure beside today's")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    results: dict = {"lines": args.lines, "date": time.strftime("%Y-%m-%d"), "kinds": {}}
    small = args.lines // 5
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        big_sources, small_sources = generate(Path(tmp) / "big", args.lines), generate(Path(tmp) / "small", small)
        print(f"generated {args.lines:,} and {small:,} lines in {time.perf_counter() - t0:.0f} s", flush=True)
        for kind in big_sources:
            arms = {"today": None, **({"old": args.old} if args.old else {})}
            for arm, impl in arms.items():
                got, fifth = measure(big_sources[kind], impl), measure(small_sources[kind], impl)
                if "peak_mib" in got and "peak_mib" in fifth:
                    per_line = (got["peak_mib"] - fifth["peak_mib"]) * 2**20 / (args.lines - small)
                    got["peak_mib_at_fifth"] = fifth["peak_mib"]
                    got["bytes_per_line"] = per_line
                    got["extrapolated_gib"] = (
                        got["peak_mib"] * 2**20 + per_line * (REAL_LINES[kind] - args.lines)
                    ) / 2**30
                results["kinds"].setdefault(kind, {})[arm] = got
                print(f"{kind:5} {arm:5} {json.dumps(got)}", flush=True)
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
