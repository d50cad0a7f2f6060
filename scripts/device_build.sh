#!/bin/sh
# On a lent device (no registry reachable): install the carried wheels (.gpu/whl, made by
# scripts/gpu_prepare.sh) and build llama-cpp-python from the carried sdist, both into SITE.
# Used by scripts/gpu_device.sh and scripts/spine_device.sh; run from the repository's root:
#
#   sh scripts/device_build.sh SITE OUT "CMAKE_ARGS"
#
# The build's last 200 lines go to OUT/build.log. A second call on the same machine, still
# warm, keeps /tmp, so a SITE there that holds a build is kept (GPU_REBUILD=1 builds anew).
set -eu
site=$1
out=$2
cmake_args=$3
mkdir -p "$site" "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .gpu/whl/*.whl
if [ -e "$site/llama_cpp/__init__.py" ] && [ -z "${GPU_REBUILD:-}" ]; then
    echo "llama-cpp-python already built in $site" >&2
    exit 0
fi
build=$(mktemp -d)
tar -xzf .gpu/llama-cpp-python.tar.gz -C "$build"
started=$(date +%s)
if ! (cd "$build"/llama_cpp_python-* &&
    CMAKE_ARGS=$cmake_args CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    python3 -m pip install --no-build-isolation --no-deps --no-cache-dir --target "$site" . \
) >"$build/build.log" 2>&1; then
    tail -n 200 "$build/build.log" >"$out/build.log"
    echo "the build of llama-cpp-python failed: see build.log" >&2
    exit 1
fi
tail -n 200 "$build/build.log" >"$out/build.log"
echo "built in $(($(date +%s) - started)) s" >&2
rm -rf "$build"
