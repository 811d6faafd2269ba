#!/usr/bin/env bash
# Wheels that bench/gpu_check.py needs on the lent GPU machine (no network there; its image has
# torch, transformers, sentence-transformers, pandas, pyarrow, scikit-learn, nvidia-ml-py, but no
# pydantic and no pytorch-crf). Downloads them into .whl/ (git-ignored) for Python 3.12 on
# manylinux x86-64, the versions this project pins. See bench/README.md for the run command.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl
PY=${PYTHON:-.venv/bin/python}
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
for name in pydantic pydantic-core annotated-types typing-inspection typing-extensions pytorch-crf; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
    -d .whl "$name==$(version "$name")"
done
ls -la .whl
