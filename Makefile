# `make run` and `make test` are the README's quick start: each creates .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
# CPU wheel that lies on this kind of machine's disk (small, installs offline). On a CUDA
# machine use e.g. `make TORCH="torch>=2.4,<2.15" run` to get a GPU build.
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint install bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m orchestrator run matrix.yaml

# the 15 slowest tests are listed after the summary: where the suite's time goes
test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15

# style (ruff), the import rules of README's Architecture section (import-linter, pyproject.toml)
# and the size rules ruff lacks (.ci/code_size.py: modules <= 500 lines, functions <= 80)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python .ci/code_size.py

# every benchmark of bench/README.md; raw results into bench/results/
bench: $(STAMP)
	$(BIN)/python bench/pretrain_throughput.py --json bench/results/pretrain_throughput.json
	$(BIN)/python bench/multitask_span_epoch.py --rounds 3 --json bench/results/multitask_span_epoch.json
	$(BIN)/python bench/multitask_span_epoch.py --rounds 3 --crf --json bench/results/multitask_span_epoch_crf.json
	$(BIN)/python bench/contrastive_step.py --rounds 3 --json bench/results/contrastive_step.json
	$(BIN)/python bench/results_scale.py --json bench/results/results_scale.json
	$(BIN)/python bench/orchestration.py --trials 16 --work-s 3 --json bench/results/orchestration_16x3.json
	$(BIN)/python bench/orchestration.py --trials 8 --work-s 20 --skip sequential --json bench/results/orchestration_8x20.json
	$(BIN)/python bench/selection_under_load.py --json bench/results/selection_under_load.json

clean:
	rm -rf $(VENV) runs
