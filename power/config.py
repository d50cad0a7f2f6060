"""Settings, resolved once at startup: defaults < `config.toml` < environment < CLI flags.

`load_settings` builds one frozen `Settings` and the caller passes it down; nothing else reads
the environment or the file.

**config.toml** (default `<home>/config.toml`, home = `$A3S_POWER_HOME` or `~/.a3s/power`; a
missing file is fine) takes the `Settings` field names as keys, flat, plus two friendlier keys:
`keep_alive` and `load_timeout`, each a Go duration string (`"5m"`, `"1h30m"`), a number of
seconds, or an integer-seconds string, which set `keep_alive_s` and `load_timeout_s`. The keys
of the product description's own config.toml are aliases (`_ALIASES`): `data_dir` (`home`),
`num_thread` (`runner_threads`) and a `[gpu]` table with `gpu_layers` and `main_gpu`; setting
both an alias and its field is an error. A key that is not a field, or a value of the wrong
type, raises `ConfigError` naming the file and the key as written there.

`[pricing."name:tag"]` tables (`input_per_million`, `output_per_million`, dollars) price a
model's tokens for `/metrics` and `/v1/usage`; `[pricing.default]` prices the rest. A key is a
model name as requests spell it (`"smollm2"` means `smollm2:latest`), compared without case.

**Environment**: the Ollama names are honoured (drop-in compatibility), `OLLAMA_HOST` and
`OLLAMA_MODELS` included, plus `A3S_POWER_HOME`; all are declared in `ENV_VARS`. Values are
parsed as Ollama does: trimmed of spaces and quotes; booleans by Go's `ParseBool`, any other
non-empty value meaning true; an unparsable number logs a warning and leaves the setting as the
lower layers had it. `OLLAMA_HOST`, the default port and the data folder follow
`power.location`, whose rules the CLI's client shares.

**CLI**: `cli` maps field names (or `keep_alive` / `load_timeout`) to values; `None` means the
flag was not given.

After merging: a negative `keep_alive_s` (or one past Go's longest duration, about 292 years) or
a `load_timeout_s` <= 0 becomes `math.inf`
(forever), `max_loaded_models` 0 becomes 3 and `num_parallel` 0 becomes 1 (Ollama's "auto"
on a CPU-sized machine). `context_length` 0 stays "auto": the daemon resolves it once at
startup from the GPUs' total memory (`power.settings.resolve_context_length`, Ollama's rule);
unresolved, the CPU default (4096) applies (`Settings.default_num_ctx`).
"""

from __future__ import annotations

import difflib
import logging
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from power.duration import MAX_SECONDS, parse_duration_env
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
    DEFAULT_MAX_LOADED_MODELS,
    DEFAULT_PRICE,
    ConfigError,
    Settings,
    parse_api_keys,
    parse_model_source,
    parse_rpc_worker,
    price_key,
)
from power.store.names import ModelName

__all__ = ["ENV_VARS", "EnvVar", "env_help", "load_settings", "settings_from_env"]

log = logging.getLogger(__name__)

_FIELDS = frozenset(Settings.__struct_fields__)
_DURATION_ALIASES = {"keep_alive": "keep_alive_s", "load_timeout": "load_timeout_s"}
# Other spellings of fields: the product description's config.toml keys. A dotted alias is a
# key of a TOML table (``[gpu]`` ``gpu_layers``); `_TABLES` lists those tables.
_ALIASES = {
    **_DURATION_ALIASES,
    "data_dir": "home",
    "num_thread": "runner_threads",
    "gpu.gpu_layers": "num_gpu",
    "gpu.main_gpu": "main_gpu",
}
_TABLES = frozenset({"gpu"})


# -- environment ---------------------------------------------------------------------------


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


def _env_bool(text: str) -> bool:
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
    _check_api_keys(keys, "environment variable A3S_POWER_API_KEYS")
    return keys


def _env_model_source(text: str) -> str:
    """``A3S_POWER_MODEL_SOURCE``: a bad value stops the start (the fleet would 404 instead)."""
    _check_model_source(text, "environment variable A3S_POWER_MODEL_SOURCE")
    return text


def _env_rpc_workers(text: str) -> list[str]:
    """``A3S_POWER_RPC_WORKERS``: a comma list of host:port."""
    workers = [w.strip() for w in text.split(",") if w.strip()]
    return _check_rpc_workers(workers, "environment variable A3S_POWER_RPC_WORKERS")


def _check_rpc_workers(value: object, source: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
        raise ConfigError(f"{source}: key 'rpc_workers': expected a list of host:port strings")
    try:
        workers = [parse_rpc_worker(w) for w in value]
    except ValueError as exc:
        raise ConfigError(f"{source}: key 'rpc_workers': {exc}") from None
    if len(set(workers)) != len(workers):
        raise ConfigError(f"{source}: key 'rpc_workers': a worker is listed twice")
    return workers


def _check_model_source(value: object, source: str) -> None:
    if not isinstance(value, str):
        raise ConfigError(f"{source}: key 'model_source': expected a string")
    if value:
        try:
            parse_model_source(value)
        except ValueError as exc:
            raise ConfigError(f"{source}: key 'model_source': {exc}") from None


def _check_api_keys(keys: object, source: str) -> None:
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ConfigError(f"{source}: key 'api_keys': expected a list of strings")
    try:
        parse_api_keys(keys)
    except ValueError as exc:
        raise ConfigError(f"{source}: key 'api_keys': {exc}") from None


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
    _var("OLLAMA_NOPRUNE", "noprune", _env_bool, "Do not prune model blobs on startup"),
    _var("OLLAMA_FLASH_ATTENTION", "flash_attention", _env_bool, "Force flash attention on or"
         " off (default auto)"),
    _var("OLLAMA_KV_CACHE_TYPE", "kv_cache_type", str, "Quantization type for the K/V cache"
         " (default f16)"),
    _var("OLLAMA_SCHED_SPREAD", "sched_spread", _env_bool, "Always schedule a model across all"
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
    _var("A3S_POWER_MODEL_SOURCE", "model_source", _env_model_source, "A fleet's shared"
         " registry, host[:port][/namespace]: a model this daemon lacks is pulled from there on"
         " first use instead of a 404"),
    _var("A3S_POWER_MODEL_SOURCE_INSECURE", "model_source_insecure", _env_bool, "Reach the"
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


# -- config.toml and CLI layers ------------------------------------------------------------


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None


def _duration_seconds(value: object, source: str, key: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return parse_duration_env(value.strip())
        except ValueError as exc:
            raise ConfigError(f"{source}: key {key!r}: {exc}") from None
    raise ConfigError(f"{source}: key {key!r}: expected a duration string or seconds")


def _flatten(layer: Mapping[str, object], source: str) -> dict[str, object]:
    """The layer with each of `_TABLES` spread into dotted keys (``gpu.main_gpu``)."""
    flat: dict[str, object] = {}
    for key, value in layer.items():
        if key not in _TABLES:
            flat[key] = str(value) if isinstance(value, Path) else value
        elif isinstance(value, Mapping):
            flat.update({f"{key}.{sub}": v for sub, v in value.items()})
        else:
            raise ConfigError(f"{source}: key {key!r}: expected a table ([{key}])")
    return flat


def _check_layer(layer: Mapping[str, object], source: str) -> dict[str, object]:
    """Validate one layer on its own, so errors name where the bad key came from (and as it
    was spelled there: an alias, a ``[gpu]`` key)."""
    values = _flatten(layer, source)
    spelled: dict[str, str] = {}
    for alias, field in _ALIASES.items():
        if alias in values:
            if field in values:
                raise ConfigError(f"{source}: set either {alias!r} or {field!r}, not both")
            value = values.pop(alias)
            if alias in _DURATION_ALIASES:
                value = _duration_seconds(value, source, alias)
            values[field], spelled[field] = value, alias
    for key in values:
        if key not in _FIELDS:
            close = difflib.get_close_matches(key, [*_FIELDS, *_ALIASES], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{source}: unknown key {key!r}{hint}")
    if "api_keys" in values:
        _check_api_keys(values["api_keys"], source)
    if "model_source" in values:
        _check_model_source(values["model_source"], source)
    if "rpc_workers" in values:
        values["rpc_workers"] = _check_rpc_workers(values["rpc_workers"], source)
    if isinstance(pricing := values.get("pricing"), Mapping):
        values["pricing"] = _price_keys(pricing, source)
    debug = values.get("debug")
    if isinstance(debug, bool):
        values["debug"] = int(debug)  # `debug = true` in TOML
    _convert(values, source, spelled)
    return values


def _price_keys(pricing: Mapping[object, object], source: str) -> dict[str, object]:
    """``[pricing]`` keyed by ``price_key``: a bad or repeated model name is an error here."""
    keyed: dict[str, object] = {}
    for key, price in pricing.items():
        normal = price_key(str(key))
        if normal != DEFAULT_PRICE and not ModelName.parse(normal).is_valid():
            raise ConfigError(f"{source}: key 'pricing': invalid model name {key!r}")
        if normal in keyed:
            raise ConfigError(f"{source}: key 'pricing': {normal!r} is priced twice")
        keyed[normal] = price
    return keyed


def _convert(
    values: Mapping[str, object], source: str, spelled: Mapping[str, str] | None = None
) -> Settings:
    try:
        return msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = re.search(r" - at `\$\.(\w+)", message)
        if match is None:
            raise ConfigError(f"{source}: {message}") from None
        detail = message[: match.start()]
        key = (spelled or {}).get(match.group(1), match.group(1))
        raise ConfigError(f"{source}: key {key!r}: {detail}") from None


def _normalise(settings: Settings) -> Settings:
    return msgspec.structs.replace(
        settings,
        home=str(Path(settings.home).expanduser()),
        keep_alive_s=math.inf
        if not 0 <= settings.keep_alive_s <= MAX_SECONDS
        else settings.keep_alive_s,
        load_timeout_s=math.inf if settings.load_timeout_s <= 0 else settings.load_timeout_s,
        max_loaded_models=settings.max_loaded_models or DEFAULT_MAX_LOADED_MODELS,
        num_parallel=settings.num_parallel or 1,
    )


def load_settings(
    *, path: Path | None, env: Mapping[str, str], cli: Mapping[str, object]
) -> Settings:
    """Resolve settings: defaults < config.toml < environment < CLI flags (None = not given)."""
    from_env = settings_from_env(env)
    from_cli = _check_layer({k: v for k, v in cli.items() if v is not None}, "command line")
    if path is None:
        home = from_cli.get("home") or from_env.get("home") or ""
        path = home_dir(str(home)) / "config.toml"
    from_toml = _check_layer(_read_toml(path), str(path))
    merged = {**from_toml, **from_env, **from_cli}
    return _normalise(_convert(merged, "settings"))
