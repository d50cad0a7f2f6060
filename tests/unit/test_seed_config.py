"""The product description's own config.toml: its keys are aliases that reach the loads.

`SEED_CONFIG` is the example from ``a3s-power-seed.txt`` ("Configuration"), plus the keys its
table and feature list name (`data_dir`, `use_mlock`, `num_thread`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from power.config import load_settings
from power.options import resolve_options
from power.settings import ConfigError, Settings
from tests.support.seed import SEED_CONFIG


def load(tmp_path: Path, text: str) -> Settings:
    config = tmp_path / "config.toml"
    config.write_text(text)
    return load_settings(path=config, env={}, cli={})


def test_the_seed_example_loads(tmp_path: Path) -> None:
    settings = load(tmp_path, SEED_CONFIG)
    assert (settings.host, settings.port, settings.max_loaded_models) == ("127.0.0.1", 11434, 1)
    assert settings.keep_alive_s == 300.0
    assert (settings.num_gpu, settings.main_gpu) == (-1, 0)


def test_the_aliases_set_their_fields(tmp_path: Path) -> None:
    text = f'data_dir = "{tmp_path / "data"}"\nuse_mlock = true\nnum_thread = 3\n'
    text += "[gpu]\ngpu_layers = 0\nmain_gpu = 1\n"
    settings = load(tmp_path, text)
    assert settings.home == str(tmp_path / "data")
    assert settings.models_dir == tmp_path / "data" / "models"
    assert settings.use_mlock is True
    assert settings.runner_threads == 3
    assert (settings.num_gpu, settings.main_gpu) == (0, 1)


def test_the_gpu_and_load_settings_are_the_defaults_of_each_load(tmp_path: Path) -> None:
    text = "use_mlock = true\nnum_thread = 1\n[gpu]\ngpu_layers = 0\nmain_gpu = 1\n"
    settings = load(tmp_path, text)
    params = resolve_options(settings, model_path="m.gguf", model_params=None, request={}).load
    assert (params.n_gpu_layers, params.main_gpu, params.use_mlock, params.n_threads) == (
        0,
        1,
        True,
        1,
    )
    # a request's options still win, as Ollama's do over the server's defaults
    asked = {"num_gpu": 5, "main_gpu": 0, "use_mlock": False, "num_thread": 2}
    params = resolve_options(settings, model_path="m.gguf", model_params=None, request=asked).load
    assert (params.n_gpu_layers, params.main_gpu, params.use_mlock) == (5, 0, False)
    assert params.n_threads == min(2, len(os.sched_getaffinity(0)))


def test_without_settings_a_load_places_what_fits_on_any_gpu_and_does_not_lock() -> None:
    params = resolve_options(Settings(), model_path="m.gguf", model_params=None, request={}).load
    assert (params.n_gpu_layers, params.main_gpu, params.use_mlock) == (-1, -1, False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[gpu]\ngpu_layer = 1", "unknown key 'gpu.gpu_layer' (did you mean 'gpu.gpu_layers'?)"),
        ("[gpu]\ngpu_layers = 'all'", "key 'gpu.gpu_layers': Expected `int`, got `str`"),
        ("[gpu]\ngpu_layers = -2", "key 'gpu.gpu_layers': Expected `int` >= -1"),
        ("[gpu]\nmain_gpu = 1.5", "key 'gpu.main_gpu': Expected `int`, got `float`"),
        ("gpu = 1", "key 'gpu': expected a table ([gpu])"),
        ("use_mlock = 'sometimes'", "key 'use_mlock': Expected `bool`, got `str`"),
        ("num_thread = -1", "key 'num_thread': Expected `int` >= 0"),
        ("data_dir = 7", "key 'data_dir': Expected `str`, got `int`"),
        ("data_dir = '/a'\nhome = '/b'", "set either 'data_dir' or 'home', not both"),
        ("num_gpu = 1\n[gpu]\ngpu_layers = 2", "set either 'gpu.gpu_layers' or 'num_gpu'"),
        ("[server]\nport = 1", "unknown key 'server'"),
    ],
)
def test_a_bad_seed_key_names_the_file_and_the_key_as_written(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load(tmp_path, text)
    assert str(excinfo.value).startswith(f"{tmp_path / 'config.toml'}: ")
    assert message in str(excinfo.value)
