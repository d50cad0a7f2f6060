#!/bin/sh
# Issue 17 item 6, in one call on a lent NVIDIA device: build llama-cpp-python with CUDA,
# make a SmolLM2-shaped model, run scripts/bench_gpu.py. Run from the repository's root with
# .gpu/ carried (made here by scripts/gpu_prepare.sh); results go to $OUT (or /tmp/gpu-out):
# bench-gpu.json, bench.log, ttft-probe.json, ttft-probe.log, and build.log (its last 200 lines).
#
#   sh scripts/gpu_device.sh [CUDA_ARCH]        (default 90: Hopper, the H100 and H200)
#
# About 200-300 s of build on 16 cores, then ~40 s of benchmark and probe. GPU_CMAKE_ARGS
# replaces the build's CMake flags: "-DGGML_CUDA=off" runs the whole script on a machine without
# a GPU.
set -eu
arch=${1:-90}
out=${OUT:-/tmp/gpu-out}
site=/tmp/site
export PYTHONUNBUFFERED=1

sh scripts/device_build.sh "$site" "$out" \
    "${GPU_CMAKE_ARGS:-"-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$arch"}"
export PYTHONPATH="$site:$PWD"

# SmolLM2-135M's shape (n_embd n_layer n_ff n_head n_head_kv) with random weights and its
# vocabulary, quantized like a model a user pulls; its end-of-sequence token is moved to an
# ordinary id, so greedy decoding of random weights runs the whole answer.
model=$(mktemp -d)
SYNTH_EOS=30000 python3 .gpu/synth_gguf.py .gpu/vocab.gguf "$model/f16.gguf" 576 30 1536 9 3
python3 -m runner.quantize "$model/f16.gguf" "$model/q4km.gguf" Q4_K_M 2>/dev/null
rm "$model/f16.gguf"

nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv >&2 || true
python3 scripts/bench_gpu.py --model "$model/q4km.gguf" --out "$out/bench-gpu.json" \
    2>"$out/bench.log" || echo "bench_gpu.py failed (rc $?): see bench.log" >&2
# where a warm first token's time goes in the runner's engine, with no gateway or process
python3 scripts/ttft_probe.py --model "$model/q4km.gguf" --threads "$(nproc)" \
    --out "$out/ttft-probe.json" 2>"$out/ttft-probe.log"
rm -rf "$model"
