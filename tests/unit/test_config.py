from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import msgspec
import pytest
import tomlkit

from power.config import load_settings
from power.environment import ENV_VARS, env_help
from power.logging import TRACE, level_for, redact
from power.serve import open_bind_warning
from power.settings import (
    ApiKey,
    ConfigError,
    Settings,
    allowed_origins,
    auto_context_length,
    default_origins,
    parse_api_keys,
    resolve_context_length,
)

# -- precedence: defaults < config.toml < env < CLI -----------------------------------------

# (field, toml layer, env layer, cli layer, expected after defaults / +toml / +env / +cli)
PRECEDENCE = [
    ("host", {"host": "0.0.0.0"}, {"OLLAMA_HOST": "10.0.0.1"}, {"host": "::1"},
     ("127.0.0.1", "0.0.0.0", "10.0.0.1", "::1")),
    ("port", {"port": 8000}, {"OLLAMA_HOST": "127.0.0.1:9000"}, {"port": 7000},
     (11434, 8000, 9000, 7000)),
    ("models", {"models": "/m1"}, {"OLLAMA_MODELS": "/m2"}, {"models": "/m3"},
     ("", "/m1", "/m2", "/m3")),
    ("home", {"home": "/h1"}, {"A3S_POWER_HOME": "/h2"}, {"home": "/h3"},
     (str(Path("~/.a3s/power").expanduser()), "/h1", "/h2", "/h3")),
    ("keep_alive_s", {"keep_alive": "10m"}, {"OLLAMA_KEEP_ALIVE": "1h"}, {"keep_alive_s": 5.0},
     (300.0, 600.0, 3600.0, 5.0)),
    ("keep_alive_s", {"keep_alive_s": 30}, {"OLLAMA_KEEP_ALIVE": "-1"}, {"keep_alive": "0"},
     (300.0, 30.0, math.inf, 0.0)),
    ("max_loaded_models", {"max_loaded_models": 5}, {"OLLAMA_MAX_LOADED_MODELS": "7"},
     {"max_loaded_models": 2}, (3, 5, 7, 2)),
    ("num_parallel", {"num_parallel": 2}, {"OLLAMA_NUM_PARALLEL": "4"}, {"num_parallel": 8},
     (1, 2, 4, 8)),
    ("max_queue", {"max_queue": 10}, {"OLLAMA_MAX_QUEUE": "20"}, {"max_queue": 30},
     (512, 10, 20, 30)),
    ("origins", {"origins": ["http://a"]}, {"OLLAMA_ORIGINS": "http://b, http://c"},
     {"origins": ("http://d",)}, ([], ["http://a"], ["http://b", "http://c"], ["http://d"])),
    ("context_length", {"context_length": 8192}, {"OLLAMA_CONTEXT_LENGTH": "16384"},
     {"context_length": 2048}, (0, 8192, 16384, 2048)),
    ("debug", {"debug": True}, {"OLLAMA_DEBUG": "2"}, {"debug": 0}, (0, 1, 2, 0)),
    ("load_timeout_s", {"load_timeout": 60}, {"OLLAMA_LOAD_TIMEOUT": "2m"},
     {"load_timeout": "0"}, (300.0, 60.0, 120.0, math.inf)),
    ("noprune", {"noprune": True}, {"OLLAMA_NOPRUNE": "false"}, {"noprune": True},
     (False, True, False, True)),
    ("flash_attention", {"flash_attention": False}, {"OLLAMA_FLASH_ATTENTION": "1"},
     {"flash_attention": False}, (None, False, True, False)),
    ("kv_cache_type", {"kv_cache_type": "q8_0"}, {"OLLAMA_KV_CACHE_TYPE": "q4_0"},
     {"kv_cache_type": "f16"}, ("f16", "q8_0", "q4_0", "f16")),
    ("sched_spread", {"sched_spread": True}, {"OLLAMA_SCHED_SPREAD": "0"},
     {"sched_spread": True}, (False, True, False, True)),
    ("gpu_overhead", {"gpu_overhead": 1}, {"OLLAMA_GPU_OVERHEAD": "2"}, {"gpu_overhead": 3},
     (0, 1, 2, 3)),
    ("runner_threads", {"runner_threads": "4"}, {}, {"runner_threads": 6}, (0, 4, 4, 6)),
    ("ping_timeout_s", {"ping_timeout_s": 1}, {}, {"ping_timeout_s": "2.5"},
     (10.0, 1.0, 1.0, 2.5)),
]  # fmt: skip


def _write_toml(path: Path, table: dict[str, object]) -> Path:
    path.write_text(tomlkit.dumps(table))
    return path


@pytest.mark.parametrize(
    ("field", "toml", "env", "cli", "expected"), PRECEDENCE, ids=[row[0] for row in PRECEDENCE]
)
def test_each_layer_overrides_the_previous(
    tmp_path: Path,
    field: str,
    toml: dict[str, object],
    env: dict[str, str],
    cli: dict[str, object],
    expected: tuple[object, object, object, object],
) -> None:
    config = _write_toml(tmp_path / "config.toml", toml)
    stages = [
        load_settings(path=tmp_path / "missing.toml", env={}, cli={}),
        load_settings(path=config, env={}, cli={}),
        load_settings(path=config, env=env, cli={}),
        load_settings(path=config, env=env, cli=cli),
    ]
    assert tuple(getattr(s, field) for s in stages) == expected


def test_cli_none_means_not_given(tmp_path: Path) -> None:
    config = _write_toml(tmp_path / "config.toml", {"port": 8000})
    cli = {"port": None, "keep_alive": None, "models": tmp_path / "m"}
    settings = load_settings(path=config, env={}, cli=cli)
    assert settings.port == 8000
    assert settings.keep_alive_s == 300.0
    assert settings.models_dir == tmp_path / "m"


def test_default_path_is_under_home_from_env(tmp_path: Path) -> None:
    _write_toml(tmp_path / "config.toml", {"port": 1234})
    settings = load_settings(path=None, env={"A3S_POWER_HOME": str(tmp_path)}, cli={})
    assert settings.port == 1234
    assert settings.home == str(tmp_path)
    assert settings.models_dir == tmp_path / "models"


@pytest.mark.parametrize(
    ("models", "home", "expected"),
    [
        ("", "/data/power", Path("/data/power/models")),
        ("/srv/models", "/data/power", Path("/srv/models")),
        ("~/m", "/data/power", Path("~/m").expanduser()),
    ],
)
def test_models_dir(models: str, home: str, expected: Path) -> None:
    assert Settings(models=models, home=home).models_dir == expected


@pytest.mark.parametrize(
    ("toml", "field", "expected"),
    [
        ({"max_loaded_models": 0}, "max_loaded_models", 3),
        ({"context_length": 0}, "context_length", 0),  # auto, decided by the GPUs
        ({"num_parallel": 0}, "num_parallel", 1),
        ({"keep_alive_s": -1}, "keep_alive_s", math.inf),
        ({"keep_alive": "-1m"}, "keep_alive_s", math.inf),
        ({"keep_alive": "3600"}, "keep_alive_s", 3600.0),
        ({"load_timeout_s": 0}, "load_timeout_s", math.inf),
        ({"load_timeout": "-5s"}, "load_timeout_s", math.inf),
        ({"port": "8080"}, "port", 8080),
        ({"noprune": "true"}, "noprune", True),
        ({"home": "~/p"}, "home", str(Path("~/p").expanduser())),
    ],
)
def test_toml_values_are_normalised(
    tmp_path: Path, toml: dict[str, object], field: str, expected: object
) -> None:
    config = _write_toml(tmp_path / "config.toml", toml)
    assert getattr(load_settings(path=config, env={}, cli={}), field) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kep_alive = '5m'", "config.toml: unknown key 'kep_alive' (did you mean 'keep_alive'?)"),
        ("prot = 1", "config.toml: unknown key 'prot' (did you mean 'port'?)"),
        ("zzz = 1", "config.toml: unknown key 'zzz'"),
        ("[gpu]\nlayers = 1", "config.toml: unknown key 'gpu.layers'"),
        ("port = 'abc'", "config.toml: key 'port': Expected `int`, got `str`"),
        ("port = 70000", "config.toml: key 'port': Expected `int` <= 65535"),
        ("max_queue = -1", "config.toml: key 'max_queue': Expected `int` >= 0"),
        ("origins = 'x'", "config.toml: key 'origins': Expected `array`, got `str`"),
        ("noprune = 'maybe'", "config.toml: key 'noprune': Expected `bool`, got `str`"),
        ("keep_alive = 'forever'", "config.toml: key 'keep_alive': time: invalid duration"),
        ("keep_alive = true", "config.toml: key 'keep_alive': expected a duration"),
        ("keep_alive = '5m'\nkeep_alive_s = 1", "set either 'keep_alive' or 'keep_alive_s'"),
        ("port = ", "config.toml: "),
        # 0 would kill every runner as hung, ping without pause, or refuse every load at once
        ("ping_timeout_s = 0", "config.toml: key 'ping_timeout_s': Expected `float` > 0.0"),
        ("ping_interval_s = 0", "config.toml: key 'ping_interval_s': Expected `float` > 0.0"),
        ("queue_timeout_s = -1", "config.toml: key 'queue_timeout_s': Expected `float` > 0.0"),
    ],
)
def test_bad_toml_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as excinfo:
        load_settings(path=config, env={}, cli={})
    assert message in str(excinfo.value)
    assert str(excinfo.value).startswith(str(config))


@pytest.mark.parametrize(
    ("cli", "message"),
    [
        ({"prot": 1}, "command line: unknown key 'prot'"),
        ({"port": "x"}, "command line: key 'port': Expected `int`, got `str`"),
        ({"keep_alive": "3 days"}, "command line: key 'keep_alive'"),
    ],
)
def test_bad_cli_names_key(tmp_path: Path, cli: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(path=tmp_path / "missing.toml", env={}, cli=cli)


def test_settings_is_frozen_and_strict() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]
    with pytest.raises(msgspec.ValidationError, match="unknown field `bogus`"):
        msgspec.convert({"bogus": 1}, Settings)


# -- environment parsing --------------------------------------------------------------------


TRUE = ["1", "t", "T", "TRUE", "true", "True", "yes", "on", "no", "2", "'false '"]
FALSE = ["0", "f", "F", "FALSE", "false", "False", " 0 ", "'false'", '"0"']


@pytest.mark.parametrize(
    ("value", "expected"), [(v, True) for v in TRUE] + [(v, False) for v in FALSE]
)
@pytest.mark.parametrize(
    "name", ["OLLAMA_NOPRUNE", "OLLAMA_SCHED_SPREAD", "OLLAMA_FLASH_ATTENTION"]
)
def test_bool_env(tmp_path: Path, name: str, value: str, expected: bool) -> None:
    key = next(var.keys[0] for var in ENV_VARS if var.name == name)
    settings = load_settings(path=tmp_path / "missing.toml", env={name: value}, cli={})
    assert getattr(settings, key) is expected


@pytest.mark.parametrize("value", ["", "  ", "''"])
def test_empty_env_leaves_lower_layer(tmp_path: Path, value: str) -> None:
    config = _write_toml(tmp_path / "config.toml", {"noprune": True, "port": 8000})
    env = {"OLLAMA_NOPRUNE": value, "OLLAMA_HOST": value}
    settings = load_settings(path=config, env=env, cli={})
    assert (settings.noprune, settings.port, settings.flash_attention) == (True, 8000, None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("4", 4), (" 4 ", 4), ("'4'", 4), ("abc", 2), ("-1", 2), ("1.5", 2), ("0x10", 2)],
)
def test_integer_env(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, value: str, expected: int
) -> None:
    config = _write_toml(tmp_path / "config.toml", {"num_parallel": 2})
    with caplog.at_level(logging.WARNING, logger="power.environment"):
        settings = load_settings(path=config, env={"OLLAMA_NUM_PARALLEL": value}, cli={})
    assert settings.num_parallel == expected
    assert ("invalid environment variable" in caplog.text) is (expected == 2)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", 1), ("true", 1), ("2", 2), ("0", 0), ("false", 0), ("garbage", 0), ("-1", -1)],
)
def test_debug_env(tmp_path: Path, value: str, expected: int) -> None:
    settings = load_settings(path=tmp_path / "missing.toml", env={"OLLAMA_DEBUG": value}, cli={})
    assert settings.debug == expected


@pytest.mark.parametrize(
    ("name", "value", "field", "expected"),
    [
        ("OLLAMA_KEEP_ALIVE", "3600", "keep_alive_s", 3600.0),
        ("OLLAMA_KEEP_ALIVE", "0", "keep_alive_s", 0.0),
        ("OLLAMA_KEEP_ALIVE", "-1", "keep_alive_s", math.inf),
        ("OLLAMA_KEEP_ALIVE", "bogus", "keep_alive_s", 300.0),
        ("OLLAMA_LOAD_TIMEOUT", "0", "load_timeout_s", math.inf),
        ("OLLAMA_LOAD_TIMEOUT", "90", "load_timeout_s", 90.0),
        ("OLLAMA_MAX_LOADED_MODELS", "0", "max_loaded_models", 3),
        ("OLLAMA_CONTEXT_LENGTH", "0", "context_length", 0),
        ("OLLAMA_NUM_GPU", "999", "num_gpu", 999),
        ("OLLAMA_NUM_GPU", "0", "num_gpu", 0),
        ("OLLAMA_NUM_GPU", "many", "num_gpu", -1),
        ("OLLAMA_TMPDIR", "~/scratch", "tmpdir", str(Path("~/scratch").expanduser())),
        ("OLLAMA_MODELS", "~/models", "models", str(Path("~/models").expanduser())),
        ("OLLAMA_ORIGINS", "a, b,,c ", "origins", ["a", "b", "c"]),
    ],
)
def test_env_values(tmp_path: Path, name: str, value: str, field: str, expected: object) -> None:
    settings = load_settings(path=tmp_path / "missing.toml", env={name: value}, cli={})
    assert getattr(settings, field) == expected


@pytest.mark.parametrize(("value", "expected"), [("auto", "auto"), (" ON ", "on"), ("off", "off")])
def test_cpu_extra_buffers_from_the_environment(tmp_path: Path, value: str, expected: str) -> None:
    env = {"A3S_POWER_CPU_EXTRA_BUFFERS": value}
    settings = load_settings(path=tmp_path / "missing.toml", env=env, cli={})
    assert settings.cpu_extra_buffers == expected


def test_an_unknown_cpu_extra_buffers_value_is_an_error_naming_it(tmp_path: Path) -> None:
    env = {"A3S_POWER_CPU_EXTRA_BUFFERS": "sometimes"}
    with pytest.raises(ConfigError, match="A3S_POWER_CPU_EXTRA_BUFFERS: 'sometimes'"):
        load_settings(path=tmp_path / "missing.toml", env=env, cli={})
    toml = tmp_path / "config.toml"
    toml.write_text('cpu_extra_buffers = "yes"\n')
    with pytest.raises(ConfigError, match="key 'cpu_extra_buffers'"):
        load_settings(path=toml, env={}, cli={})


def test_env_table_covers_the_documented_variables() -> None:
    names = [name for name, _ in env_help()]
    assert names == [var.name for var in ENV_VARS]
    assert set(names) == {
        "OLLAMA_HOST", "OLLAMA_MODELS", "OLLAMA_KEEP_ALIVE", "OLLAMA_MAX_LOADED_MODELS",
        "OLLAMA_NUM_PARALLEL", "OLLAMA_MAX_QUEUE", "OLLAMA_ORIGINS", "OLLAMA_CONTEXT_LENGTH",
        "OLLAMA_DEBUG", "OLLAMA_LOAD_TIMEOUT", "OLLAMA_NOPRUNE", "OLLAMA_FLASH_ATTENTION",
        "OLLAMA_KV_CACHE_TYPE", "OLLAMA_SCHED_SPREAD", "OLLAMA_GPU_OVERHEAD", "OLLAMA_NUM_GPU",
        "OLLAMA_TMPDIR", "A3S_POWER_HOME",
        "A3S_POWER_RUNNER_ENGINE", "A3S_POWER_CPU_EXTRA_BUFFERS", "A3S_POWER_LOG_FORMAT",
        "A3S_POWER_MAX_BODY_SIZE", "A3S_POWER_API_KEYS", "A3S_POWER_USAGE_RETENTION_DAYS",
        "A3S_POWER_LOG_FILE", "A3S_POWER_LOG_MAX_BYTES",
        "A3S_POWER_LOG_BACKUPS", "A3S_POWER_MODEL_SOURCE", "A3S_POWER_MODEL_SOURCE_INSECURE",
        "A3S_POWER_RPC_WORKERS", "A3S_POWER_BODY_TIMEOUT",
    }  # fmt: skip
    assert all(help_text for _, help_text in env_help())
    for var in ENV_VARS:
        assert set(var.keys) <= set(Settings.__struct_fields__)


def test_allowed_origins() -> None:
    defaults = default_origins()
    assert {"http://localhost", "https://127.0.0.1:*", "http://0.0.0.0:*", "app://*"} <= set(
        defaults
    )
    assert {"file://*", "tauri://*", "vscode-webview://*", "vscode-file://*"} <= set(defaults)
    assert len(defaults) == 17
    settings = Settings(origins=["chrome-extension://*"])
    assert allowed_origins(settings) == ["chrome-extension://*", *defaults]


# -- power.logging (levels, redaction) ------------------------------------------------------


@pytest.mark.parametrize(
    ("debug", "level"),
    [(0, logging.INFO), (1, logging.DEBUG), (2, TRACE), (3, TRACE), (-1, logging.WARNING),
     (-2, logging.ERROR)],
)  # fmt: skip
def test_level_for(debug: int, level: int) -> None:
    assert level_for(debug) == level


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
        ('{"authorization": "Basic dXNlcjpw"}', '{"authorization": "Basic ***"}'),
        ("sent bearer eyJhbGciOi.x.y to", "sent bearer *** to"),
        ("password=hunter2 user=bob", "password=*** user=bob"),
        ("db_password: 's3cret'", "db_password: '***'"),
        ("OLLAMA_API_KEY=abc123", "OLLAMA_API_KEY=***"),
        ("X-Api-Key: abc123", "X-Api-Key: ***"),
        ('"client_secret": "zzz"', '"client_secret": "***"'),
        ("HF_TOKEN=hf_abc", "HF_TOKEN=***"),
        ("?access_token=abc&x=1", "?access_token=***&x=1"),
        ("--api-key xyz --port 1", "--api-key *** --port 1"),
        ("https://bob:pw@host/x", "https://bob:***@host/x"),
        ("key sk-abcdefghijklmnopqrstuv end", "key *** end"),
        ("print_info: BOS token        = 1 '<s>'", "print_info: BOS token        = 1 '<s>'"),
        ("n_tokens = 512, n_ctx = 4096", "n_tokens = 512, n_ctx = 4096"),
        ("loaded model in 1.2s", "loaded model in 1.2s"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_api_keys_come_from_config_or_a_comma_list_and_mark_read_only(tmp_path: Path) -> None:
    toml = tmp_path / "config.toml"
    toml.write_text('api_keys = ["admin-key", "viewer-key:ro"]\n')
    from_file = load_settings(path=toml, env={}, cli={})
    assert parse_api_keys(from_file.api_keys) == (
        ApiKey(b"admin-key", read_only=False),
        ApiKey(b"viewer-key", read_only=True),
    )
    env = {"A3S_POWER_API_KEYS": " one , two:ro,,"}
    from_env = load_settings(path=toml, env=env, cli={})
    assert from_env.api_keys == ["one", "two:ro"]


@pytest.mark.parametrize("entry", ["", ":ro", "has space", "caf\u00e9"])
def test_a_bad_api_key_stops_the_start_without_echoing_it(tmp_path: Path, entry: str) -> None:
    toml = tmp_path / "config.toml"
    toml.write_text(f"api_keys = {json.dumps(['fine', entry])}\n")
    with pytest.raises(ConfigError, match="key 'api_keys': entry 2 ") as raised:
        load_settings(path=toml, env={}, cli={})
    assert entry.strip() == "" or entry not in str(raised.value)
    env = {"A3S_POWER_API_KEYS": f"fine,{entry}x y"}  # never silently ignored: that opens the API
    with pytest.raises(ConfigError, match="A3S_POWER_API_KEYS: key 'api_keys': entry 2 "):
        load_settings(path=tmp_path / "missing.toml", env=env, cli={})
    toml.write_text('api_keys = "just-one"\n')
    with pytest.raises(ConfigError, match="key 'api_keys': expected a list of strings"):
        load_settings(path=toml, env={}, cli={})


@pytest.mark.parametrize(
    ("host", "keys", "warned"),
    [
        ("127.0.0.1", [], False),
        ("::1", [], False),
        ("localhost", [], False),
        ("0.0.0.0", [], True),
        ("", [], True),
        ("192.168.1.20", [], True),
        ("0.0.0.0", ["k"], False),
    ],
)
def test_an_open_bind_without_keys_is_warned_about(
    host: str, keys: list[str], warned: bool
) -> None:
    warning = open_bind_warning(Settings(host=host, api_keys=keys))
    assert (warning is not None) == warned
    if warning:
        assert "without API keys" in warning
        assert (host or "every interface") in warning


GIB = 2**30


@pytest.mark.parametrize(
    ("gpus", "overhead", "expected"),
    [
        ((), 0, 4096),  # CPU only: Ollama's CPU default
        ((16 * GIB,), 0, 4096),
        ((24 * GIB,), 0, 32768),
        ((24 * GIB,), 2 * GIB, 4096),  # the overhead is kept back from every GPU
        ((24 * GIB, 24 * GIB), 0, 262144),  # all GPUs together
        ((80 * GIB,), 0, 262144),
    ],
)
def test_the_default_context_length_follows_ollamas_vram_tiers(
    gpus: tuple[int, ...], overhead: int, expected: int
) -> None:
    assert auto_context_length(gpus, overhead) == expected


def test_only_an_unset_context_length_is_decided_by_the_gpus(tmp_path: Path) -> None:
    auto = load_settings(path=tmp_path / "missing.toml", env={}, cli={})
    assert auto.default_num_ctx == 4096  # not yet resolved: the CPU default
    assert resolve_context_length(auto, [48 * GIB]).default_num_ctx == 262144
    assert resolve_context_length(auto, []).default_num_ctx == 4096
    env = {"OLLAMA_CONTEXT_LENGTH": "8192"}
    fixed = load_settings(path=tmp_path / "missing.toml", env=env, cli={})
    assert resolve_context_length(fixed, [48 * GIB]).default_num_ctx == 8192


def test_model_source_is_a_registry_host_and_namespace(tmp_path: Path) -> None:
    env = {
        "A3S_POWER_MODEL_SOURCE": "registry.lan:5000/team",
        "A3S_POWER_MODEL_SOURCE_INSECURE": "1",
    }
    settings = load_settings(path=tmp_path / "missing.toml", env=env, cli={})
    assert settings.model_source_parts == ("registry.lan:5000", "team")
    assert settings.model_source_insecure is True
    toml = tmp_path / "config.toml"
    toml.write_text('model_source = "registry.lan"\n')
    assert load_settings(path=toml, env={}, cli={}).model_source_parts == (
        "registry.lan",
        "library",
    )
    assert load_settings(path=tmp_path / "missing.toml", env={}, cli={}).model_source_parts is None


def test_a_bad_model_source_stops_the_start_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="A3S_POWER_MODEL_SOURCE: key 'model_source'"):
        load_settings(path=tmp_path / "x.toml", env={"A3S_POWER_MODEL_SOURCE": "a/b/c"}, cli={})
    toml = tmp_path / "config.toml"
    toml.write_text('model_source = "-bad host"\n')
    with pytest.raises(ConfigError, match="key 'model_source'"):
        load_settings(path=toml, env={}, cli={})


def test_rpc_workers_come_from_the_file_or_the_environment_and_reach_the_runner(
    tmp_path: Path,
) -> None:
    from power.options import resolve_options

    env = {"A3S_POWER_RPC_WORKERS": " 10.0.0.2:50052, gpu-box:50053 "}
    settings = load_settings(path=tmp_path / "missing.toml", env=env, cli={})
    assert settings.rpc_workers == ["10.0.0.2:50052", "gpu-box:50053"]
    resolved = resolve_options(settings, model_path="m.gguf", model_params=None, request=None)
    assert resolved.load.rpc_workers == ("10.0.0.2:50052", "gpu-box:50053")
    toml = tmp_path / "config.toml"
    toml.write_text('rpc_workers = ["127.0.0.1:50052"]\n')
    assert load_settings(path=toml, env={}, cli={}).rpc_workers == ["127.0.0.1:50052"]
    none = load_settings(path=tmp_path / "missing.toml", env={}, cli={})
    assert (
        resolve_options(none, model_path="m", model_params=None, request=None).load.rpc_workers
        == ()
    )


@pytest.mark.parametrize(
    "value", ['["10.0.0.2"]', '["10.0.0.2:0"]', '["[::1]:50052"]', '["h:1", "h:1"]', '"h:1"']
)
def test_a_bad_rpc_worker_stops_the_start_naming_the_key(tmp_path: Path, value: str) -> None:
    toml = tmp_path / "config.toml"
    toml.write_text(f"rpc_workers = {value}\n")
    with pytest.raises(ConfigError, match="key 'rpc_workers'"):
        load_settings(path=toml, env={}, cli={})
    env = {"A3S_POWER_RPC_WORKERS": "10.0.0.2:50052,nope"}
    with pytest.raises(ConfigError, match="A3S_POWER_RPC_WORKERS: key 'rpc_workers'"):
        load_settings(path=tmp_path / "missing.toml", env=env, cli={})
