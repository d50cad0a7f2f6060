"""The environment layer of the settings: every variable `power serve` reads, its parser, its
help (`ENV_VARS`), and the settings a given environment sets (`settings_from_env`).

The Ollama names are honoured (drop-in compatibility), `OLLAMA_HOST` and `OLLAMA_MODELS`
included, plus `A3S_POWER_HOME` and A3S Power's own. Values are parsed as Ollama does: trimmed
of spaces and quotes; booleans by Go's `ParseBool`, any other non-empty value meaning true; an
unparsable number logs a warning and leaves the setting as the lower layers had it (a value
that would make the daemon serve the wrong thing, as a bad model source, stops the start).
`power.config` puts this layer between `config.toml` and the CLI's flags.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

from power.duration import parse_duration_env
from power.location import (
    DEFAULT_HOME,
    DEFAULT_HOST,
    DEFAULT_PORT,
    HOME_VAR,
    HOST_VAR,
    home_dir,
    listen_address,
    trim_env,
)
from power.settings import (
    DEFAULT_LOG_BACKUPS,
    DEFAULT_LOG_MAX_BYTES,
    DEFAULT_MAX_BODY_SIZE,
    ConfigError,
    check_api_keys,
    check_model_source,
    check_rpc_workers,
)

__all__ = ["ENV_VARS", "EnvVar", "env_bool", "env_help", "settings_from_env"]

log = logging.getLogger(__name__)

_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_UINT = re.compile(r"[0-9]+")
_INT = re.compile(r"[+-]?[0-9]+")


def _go_parse_bool(text: str) -> bool | None:
    """Go's `strconv.ParseBool`; None when it is not one of its spellings."""
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    return None


def env_bool(text: str) -> bool:
    """An Ollama boolean variable's value (``envconfig.Bool``): Go's ``ParseBool``, and any
    other non-empty text true."""
    parsed = _go_parse_bool(text)
    return True if parsed is None else parsed


def _env_uint(text: str) -> int:
    if not _UINT.fullmatch(text) or int(text) >= 1 << 64:
        raise ValueError(f"not an unsigned integer: {text!r}")
    return int(text)


def _env_debug(text: str) -> int:
    """`OLLAMA_DEBUG`: a Go bool (true -> 1) or an integer level; anything else is 0 (INFO)."""
    parsed = _go_parse_bool(text)
    if parsed is not None:
        return int(parsed)
    return int(text) if _INT.fullmatch(text) else 0


def _env_origins(text: str) -> list[str]:
    return [origin.strip() for origin in text.split(",") if origin.strip()]


def _env_path(text: str) -> str:
    return str(Path(text).expanduser())


def _env_choice(name: str, choices: tuple[str, ...]) -> Callable[[str], str]:
    """A variable with a fixed set of values: anything else stops the start, naming it."""

    def parse(text: str) -> str:
        if text.lower() not in choices:
            raise ConfigError(
                f"environment variable {name}: {text!r} is not one of {', '.join(choices)}"
            )
        return text.lower()

    return parse


def _env_api_keys(text: str) -> list[str]:
    """``A3S_POWER_API_KEYS``: a comma list. A bad entry stops the start (ignoring it would
    leave the API open)."""
    keys = [key.strip() for key in text.split(",") if key.strip()]
    check_api_keys(keys, "environment variable A3S_POWER_API_KEYS")
    return keys


def _env_model_source(text: str) -> str:
    """``A3S_POWER_MODEL_SOURCE``: a bad value stops the start (the fleet would 404 instead)."""
    check_model_source(text, "environment variable A3S_POWER_MODEL_SOURCE")
    return text


def _env_rpc_workers(text: str) -> list[str]:
    """``A3S_POWER_RPC_WORKERS``: a comma list of host:port."""
    workers = [w.strip() for w in text.split(",") if w.strip()]
    return check_rpc_workers(workers, "environment variable A3S_POWER_RPC_WORKERS")


def _env_host(text: str) -> dict[str, object]:
    host, port = listen_address(text)
    return {"host": host, "port": port}


class EnvVar(NamedTuple):
    """One environment variable: which `Settings` fields it sets, its parser, its help."""

    name: str
    keys: tuple[str, ...]
    parse: Callable[[str], dict[str, object]]  # trimmed, non-empty text; ValueError -> ignored
    help: str


def _var(name: str, key: str, convert: Callable[[str], object], help: str) -> EnvVar:
    return EnvVar(name, (key,), lambda text: {key: convert(text)}, help)


ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar(HOST_VAR, ("host", "port"), _env_host, "IP address and port to listen on"
           f" (default {DEFAULT_HOST}:{DEFAULT_PORT})"),
    _var("OLLAMA_MODELS", "models", _env_path, "Path to the models directory"
         " (default <home>/models)"),
    _var("OLLAMA_KEEP_ALIVE", "keep_alive_s", parse_duration_env, "How long models stay loaded:"
         " Go duration or seconds, negative = forever (default 5m)"),
    _var("OLLAMA_MAX_LOADED_MODELS", "max_loaded_models", _env_uint, "Maximum number of loaded"
         " models (default 0 = auto = 3)"),
    _var("OLLAMA_NUM_PARALLEL", "num_parallel", _env_uint, "Maximum number of parallel requests"
         " per model (default 1)"),
    _var("OLLAMA_MAX_QUEUE", "max_queue", _env_uint, "Maximum number of queued requests"
         " (default 512)"),
    _var("OLLAMA_ORIGINS", "origins", _env_origins, "A comma separated list of allowed origins"),
    _var("OLLAMA_CONTEXT_LENGTH", "context_length", _env_uint, "Context length to use unless"
         " otherwise specified (default 0 = by total VRAM: 4096, 32768 from 23 GiB, 262144 from"
         " 47 GiB)"),
    _var("OLLAMA_DEBUG", "debug", _env_debug, "Show additional debug information (e.g. 1, 2)"),
    _var("OLLAMA_LOAD_TIMEOUT", "load_timeout_s", parse_duration_env, "How long to allow model"
         " loads to stall before giving up, <= 0 = forever (default 5m)"),
    _var("OLLAMA_NOPRUNE", "noprune", env_bool, "Do not prune model blobs on startup"),
    _var("OLLAMA_FLASH_ATTENTION", "flash_attention", env_bool, "Force flash attention on or"
         " off (default auto)"),
    _var("OLLAMA_KV_CACHE_TYPE", "kv_cache_type", str, "Quantization type for the K/V cache"
         " (default f16)"),
    _var("OLLAMA_SCHED_SPREAD", "sched_spread", env_bool, "Always schedule a model across all"
         " GPUs"),
    _var("OLLAMA_GPU_OVERHEAD", "gpu_overhead", _env_uint, "Reserve a portion of VRAM per GPU"
         " (bytes)"),
    _var("OLLAMA_NUM_GPU", "num_gpu", int, "Layers to offload to the GPU unless the request or"
         " model sets num_gpu (default -1 = as many as fit; 0 = CPU only; 999 = all)"),
    _var("OLLAMA_TMPDIR", "tmpdir", _env_path, "Location for temporary files of uploads and"
         " quantization (default: the models' blobs folder; must be on its filesystem, since"
         " finished files are renamed into place)"),
    _var(HOME_VAR, "home", lambda text: str(home_dir(text)), "A3S Power data directory"
         f" (default {DEFAULT_HOME})"),
    _var("A3S_POWER_RUNNER_ENGINE", "runner_engine", str, "Runner engine: llama (default), or"
         " fake:<mode> for tests"),
    _var("A3S_POWER_LOG_FORMAT", "log_format",
         _env_choice("A3S_POWER_LOG_FORMAT", ("text", "json")),
         "Log lines as text (default) or json (one JSON object per line)"),
    _var("A3S_POWER_LOG_FILE", "log_file", _env_path, "Write the log to this file instead of"
         " stderr, rotated by size (power run's background daemon: <home>/logs/server.log)"),
    _var("A3S_POWER_LOG_MAX_BYTES", "log_max_bytes", _env_uint, "Size at which the log file"
         f" rotates (default {DEFAULT_LOG_MAX_BYTES} = 10 MiB)"),
    _var("A3S_POWER_LOG_BACKUPS", "log_backups", _env_uint, "Rotated log files kept"
         f" (server.log.1 ...; default {DEFAULT_LOG_BACKUPS})"),
    _var("A3S_POWER_CPU_EXTRA_BUFFERS", "cpu_extra_buffers",
         _env_choice("A3S_POWER_CPU_EXTRA_BUFFERS", ("auto", "on", "off")),
         "llama.cpp's repacked CPU weight buffers: auto (default: on, except AMX kernels on CPUs"
         " with AMX), on (AMX included), off"),
    _var("A3S_POWER_API_KEYS", "api_keys", _env_api_keys, "Comma separated API keys; each may"
         " end in :ro (read-only: no create, copy, delete, pull, push or blob upload). When set,"
         " every endpoint but /, /health and /api/version needs one"),
    _var("A3S_POWER_USAGE_RETENTION_DAYS", "usage_retention_days", _env_uint, "Days of usage"
         " records kept in <home>/usage.db (default 365; 0 = forever)"),
    _var("A3S_POWER_MAX_BODY_SIZE", "max_body_size", _env_uint, "Largest JSON request body in"
         f" bytes, 413 beyond (default {DEFAULT_MAX_BODY_SIZE} = 100 MiB; 0 = no limit; blob"
         " uploads have none)"),
    _var("A3S_POWER_BODY_TIMEOUT", "body_timeout_s", parse_duration_env, "How long a request"
         " body may pause before its end, 408 beyond: Go duration or seconds (default 75s)"),
    _var("A3S_POWER_MODEL_SOURCE", "model_source", _env_model_source, "A fleet's shared"
         " registry, host[:port][/namespace]: a model this daemon lacks is pulled from there on"
         " first use instead of a 404"),
    _var("A3S_POWER_MODEL_SOURCE_INSECURE", "model_source_insecure", env_bool, "Reach the"
         " model source over plain http"),
    _var("A3S_POWER_RPC_WORKERS", "rpc_workers", _env_rpc_workers, "Comma separated llama.cpp"
         " RPC workers (host:port, started with power rpc-worker): every model's layers are"
         " split over them and this machine by the memory each reports; needs llama-cpp-python"
         " built with GGML_RPC=ON (docs/rpc.md)"),
)  # fmt: skip


def env_help() -> list[tuple[str, str]]:
    """(variable, description) pairs for `serve --help` and the README."""
    return [(var.name, var.help) for var in ENV_VARS]


def settings_from_env(env: Mapping[str, str]) -> dict[str, object]:
    """The settings the environment sets; unset, empty and unparsable variables set nothing."""
    values: dict[str, object] = {}
    for var in ENV_VARS:
        raw = env.get(var.name)
        if raw is None:
            continue
        text = trim_env(raw)
        if not text:
            continue
        try:
            values.update(var.parse(text))
        except ValueError:
            log.warning("invalid environment variable, using default: %s=%r", var.name, text)
    return values
