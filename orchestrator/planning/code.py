"""What code a study's trials ran: a hash per trainable over the files of its code (its file, or
its modules and the modules of its package they import: `Trainable.code_files`), stored in
`study.json` (`code`) and with every trial (its config, its metadata.json, its record and the
results table's `code` column).

Running or resuming a study whose trainable's code changed since its trials ran is refused in one
line naming the trainable and the changed files, unless `--allow-code-change`: then only new and
unfinished trials run the new code, and each row of the tables says which code it ran. Results
from two versions of the code are never mixed silently.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from orchestrator.errors import Problem, UserError
from orchestrator.planning.expand import Plan


def identity(trainable) -> dict:
    """{"hash": 16 hex digits over every file, "files": {name: 16 hex digits}} of a trainable's code
    (names relative to its package's parent folder: `mylab/recipes/x.py`; a file trainable: its name)."""
    files = trainable.code_files()
    base = trainable.package.parent if trainable.package is not None else Path("/")
    digests = {str(f.relative_to(base)): hashlib.sha256(f.read_bytes()).hexdigest()[:16] for f in files}
    whole = hashlib.sha256("".join(f"{k}\0{v}\n" for k, v in sorted(digests.items())).encode()).hexdigest()[:16]
    return {"hash": whole, "files": digests}


def identities(plan: Plan) -> dict[str, dict]:
    """The code identity of every trainable of the study, by its name in the study file."""
    out: dict[str, dict] = {}
    for sp in plan.stages.values():
        if sp.stage.trainable not in out:
            out[sp.stage.trainable] = identity(sp.trainable)
    return out


def changed_files(before: dict, now: dict) -> list[str]:
    """The files that differ between two identities (changed, added or removed)."""
    old, new = before.get("files", {}), now.get("files", {})
    return sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))


def check_unchanged(
    stored: dict | None, now: dict[str, dict], trainables: list[str], where: str, allow: bool
) -> list[str]:
    """Refuse (one line) to run `trainables` whose code changed since the study's trials ran,
    unless `allow`; the lines to print about what changed (with `allow`)."""
    lines = []
    for name in dict.fromkeys(trainables):
        before = (stored or {}).get(name)
        if before is None or before.get("hash") == now[name]["hash"]:
            continue
        files = changed_files(before, now[name])
        shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
        if not allow:
            raise UserError(
                Problem(
                    where,
                    f"the code of trainable {name} changed since this study's trials ran ({shown}); "
                    "--allow-code-change runs its new and unfinished trials with the new code (finished "
                    "trials keep their results, and the tables' code column says which code each ran)",
                    "stages",
                )
            )
        lines.append(f"code of trainable {name} changed ({shown}): {before['hash']} -> {now[name]['hash']}")
    return lines
