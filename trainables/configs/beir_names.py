"""BEIR datasets by name: the name a folder has in the tables, metric columns and run files
(`final/<name>/ndcg@10`, `runs/<name>.trec`), and the check that a trainable's folders have
distinct names (settings-only, so that `validate` refuses two `test/` folders without torch)."""

from __future__ import annotations

import re
from pathlib import Path


def dataset_name(source: str) -> str:
    """A BEIR source as a name for columns and file names."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source).name if not source.startswith("synthetic:") else source[10:])


def distinct_names(sources: list[str]) -> str | None:
    """Why these BEIR sources cannot be told apart in the tables (two folders with one name, e.g.
    two `test/` folders, or a folder listed twice), or None."""
    seen: dict[str, str] = {}
    for source in sources:
        name = dataset_name(str(source))
        if name in seen:
            first = seen[name]
            if str(first) == str(source):
                return f"{source} is listed twice"
            return (
                f"{first} and {source} are both named {name!r} in the tables and run files; "
                "give the folders distinct names"
            )
        seen[name] = source
    return None


def distinct_beir(cls, sources: list[str]) -> list[str]:
    """A pydantic validator of a `beir` list: distinct names (see `distinct_names`)."""
    clash = distinct_names(sources)
    if clash:
        raise ValueError(clash)
    return sources
