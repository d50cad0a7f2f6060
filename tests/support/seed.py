"""The example ``config.toml`` of ``a3s-power-seed.txt`` ("Configuration"), as a user would
copy it, for the tests of the seed's configuration keys."""

from __future__ import annotations

SEED_CONFIG = """\
host = "127.0.0.1"
port = 11434
max_loaded_models = 1
keep_alive = "5m" # auto-unload idle models ("0"=immediate, "-1"=never, "5m", "1h")

[gpu]
gpu_layers = -1 # offload all layers to GPU (-1=all, 0=CPU only)
main_gpu = 0 # primary GPU index
"""
