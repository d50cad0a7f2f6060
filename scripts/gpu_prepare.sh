#!/bin/sh
# What a lent GPU device needs to run scripts/gpu_device.sh, made here (this machine reaches
# PyPI; the device reaches nothing) into .gpu/, which git ignores and the device tool carries:
#
#   sh scripts/gpu_prepare.sh [path/to/synth_gguf.py]     (default ../shared/tools/synth_gguf.py)
#
# then, on the device, from the repository's root, carrying .gpu (one call, ~5.5 minutes):
#
#   sh scripts/gpu_device.sh
#
# .gpu/ holds (about 55 MB, under the 64 MiB a device call carries):
# - llama-cpp-python's sdist without what its build never reads (the vendored llama.cpp's
#   models/, docs/, benches/, the package's examples/ and docker/): the whole one is 77 MB;
# - wheels for the device's Python 3.12 of the packages the gateway needs and its image lacks;
# - SmolLM2's vocabulary as a GGUF without tensors (1.7 MB, scripts/gguf_vocab.py) and the
#   workplace's random-weight model generator, which builds SmolLM2's shape around it there.
set -eu
cd "$(dirname "$0")/.."
synth=${1:-../shared/tools/synth_gguf.py}
py=.venv/bin/python
[ -x "$py" ] || py=python3
version=$("$py" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rm -rf .gpu
mkdir -p .gpu/whl

# The sdist straight from PyPI's simple index: `pip download --no-binary :all:` would build its
# build requirements (cmake among them) from source too, which takes longer than the build.
"$py" - "$version" "$tmp" <<'PY'
import re, sys, urllib.request
version, into = sys.argv[1], sys.argv[2]
name = f"llama_cpp_python-{version}.tar.gz"
with urllib.request.urlopen("https://pypi.org/simple/llama-cpp-python/", timeout=60) as resp:
    page = resp.read().decode()
url = re.search(r'href="([^"#]*/' + re.escape(name) + ')', page).group(1)
urllib.request.urlretrieve(url, f"{into}/{name}")
PY
tar -xzf "$tmp/llama_cpp_python-$version.tar.gz" -C "$tmp"
src="$tmp/llama_cpp_python-$version"
rm -rf "$src/vendor/llama.cpp/models" "$src/vendor/llama.cpp/docs" \
    "$src/vendor/llama.cpp/benches" "$src/examples" "$src/docker"
tar -czf .gpu/llama-cpp-python.tar.gz -C "$tmp" "llama_cpp_python-$version"

# The versions this checkout runs with; what the device's image already has is left out
# (numpy, jinja2, click, aiohttp, prometheus-client, psutil, httpx, h11, anyio, pyyaml, tqdm).
pin() { "$py" -c "import importlib.metadata as m; print('$1==' + m.version('$1'))"; }
wanted="$(pin msgspec) $(pin starlette) $(pin hypercorn) $(pin h2) $(pin hpack) $(pin hyperframe)
    $(pin priority) $(pin wsproto) $(pin tomlkit) $(pin minijinja) $(pin diskcache) gguf"
# shellcheck disable=SC2086
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .gpu/whl $wanted

python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q .gpu/whl/gguf-*.whl numpy pyyaml tqdm
model=$("$py" -c 'from power.create.starter import starter_gguf_path; print(starter_gguf_path())')
"$tmp/venv/bin/python" scripts/gguf_vocab.py "$model" .gpu/vocab.gguf
cp "$synth" .gpu/synth_gguf.py
du -sh .gpu
