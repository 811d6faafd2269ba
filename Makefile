# `make run` and `make test` are the README's quick start: each creates .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
# CPU wheel that lies on this kind of machine's disk (small, installs offline). On a CUDA
# machine use e.g. `make TORCH="torch>=2.4,<2.15" run` to get a GPU build.
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m orchestrator run matrix.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/pretrain_throughput.py

clean:
	rm -rf $(VENV) runs
