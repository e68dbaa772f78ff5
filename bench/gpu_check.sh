#!/usr/bin/env bash
# bench/gpu_check.sh — the vLLM backend on an NVIDIA GPU, in one go (≤ 10 minutes).
#
# UNTESTED: written on a machine without a GPU. Run it from the repository root on a machine
# with an NVIDIA GPU and its driver; it needs PyPI (or a mirror) for `vllm` and its CUDA torch.
#
#   bash bench/gpu_check.sh                 # the embedded model
#   BIG_MODEL=/path/to/llama-3.2-1b bash bench/gpu_check.sh   # plus a 1-8B HF directory, if one is on disk
#
# It (1) builds .venv-gpu with vllm (CUDA) and sazanami (no deps + requirements-vllm.txt),
# (2) converts the embedded model once with the main venv when it is not cached yet,
# (3) runs tests/test_vllm.py, (4) runs bench/throughput.py --backend vllm on the embedded
# model and on $BIG_MODEL, and prints the GPU's name beside the figures. Put them in the
# docs/guide/backends.md (vLLM) with the GPU named.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv-gpu}
VLLM_PKG=${VLLM_PKG:-vllm}
TOKENS=${TOKENS:-128}
deadline=$((SECONDS + 600))

command -v nvidia-smi >/dev/null || { echo "gpu_check: no nvidia-smi: this machine has no NVIDIA GPU" >&2; exit 1; }
GPU=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1)
echo "gpu_check: $GPU"

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "$VLLM_PKG"          # brings its own CUDA torch
"$VENV/bin/pip" install -q --no-deps -e .
"$VENV/bin/pip" install -q -r requirements-vllm.txt
"$VENV/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"

# The embedded model's safetensors: converted once by the main venv (transformers + gguf there).
if ! "$VENV/bin/python" -c "from sazanami.models import cache_dir, DEFAULT_MODEL; import sys; sys.exit(0 if (cache_dir()/'models'/DEFAULT_MODEL/'model.safetensors').exists() else 1)"; then
    make setup
    .venv/bin/python -c "from sazanami.models import embedded_dir; print(embedded_dir())"
fi

left() { echo $((deadline - SECONDS)); }

echo "== tests/test_vllm.py ($(left) s left)"
timeout "$(left)" "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_vllm.py || echo "gpu_check: tests FAILED"

echo "== throughput, embedded model ($(left) s left)"
timeout "$(left)" "$VENV/bin/python" bench/throughput.py --backend vllm --tokens "$TOKENS" | tee /tmp/gpu_check_small.txt

if [ -n "${BIG_MODEL:-}" ] && [ -f "$BIG_MODEL/config.json" ]; then
    echo "== throughput, $BIG_MODEL ($(left) s left)"
    timeout "$(left)" "$VENV/bin/python" bench/throughput.py --backend vllm --model "$BIG_MODEL" --tokens "$TOKENS" \
        | tee /tmp/gpu_check_big.txt || echo "gpu_check: big model run did not finish"
else
    echo "== no BIG_MODEL directory given (a 1-8B HF directory on disk): skipped"
fi

echo
echo "gpu_check: figures above measured on: $GPU"
