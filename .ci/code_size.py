"""The size rules ruff has no rule for: no module over 500 lines and no function over 80 lines
in `orchestrator/` and `trainables/` (ruff already caps statements per function and positional
parameters). Run by `make lint`; prints every breach and exits 1 if there is one."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestrator", "trainables")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def breaches() -> list[str]:
    found = []
    for path in sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py")):
        text = path.read_text()
        name = path.relative_to(ROOT)
        lines = text.count("\n")
        if lines > MAX_MODULE_LINES:
            found.append(f"{name}: {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{name}:{node.lineno}: {node.name} is {length} lines (at most {MAX_FUNCTION_LINES})")
    return found


if __name__ == "__main__":
    problems = breaches()
    print(
        "\n".join(problems)
        or f"code size: no module over {MAX_MODULE_LINES} lines, no function over {MAX_FUNCTION_LINES}"
    )
    sys.exit(1 if problems else 0)
