"""User-facing errors: one line each, naming the file, the key path and what was expected.

Every problem a user can fix (bad YAML, unknown keys, missing files, bad data) is raised as
`UserError` (or collected into `UserErrors`); the CLI prints them without a traceback and
exits with code 2 before anything is started or written.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: `FILE[:LINE]: key.path: message`."""

    file: str
    message: str
    path: str = ""
    line: int | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class UserError(Exception):
    """A problem with user input; carries one or more `Problem`s."""

    def __init__(self, problems: list[Problem] | Problem | str):
        if isinstance(problems, str):
            problems = [Problem(file="error", message=problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def join_path(*parts: object) -> str:
    """Render a key path like `stages.pretrain.grid.lr[1]`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "":
            out += f".{part}" if out else str(part)
    return out
