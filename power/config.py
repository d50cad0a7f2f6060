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

**Environment**: `power.environment` declares every variable (`ENV_VARS`, the Ollama names
included) and how each is parsed. `OLLAMA_HOST`, the default port and the data folder follow
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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from power.duration import MAX_SECONDS, parse_duration_env
from power.environment import settings_from_env
from power.location import home_dir
from power.settings import (
    DEFAULT_MAX_LOADED_MODELS,
    DEFAULT_PRICE,
    ConfigError,
    Settings,
    check_api_keys,
    check_model_source,
    check_rpc_workers,
    price_key,
)
from power.store.names import ModelName

__all__ = ["load_settings"]

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
        check_api_keys(values["api_keys"], source)
    if "model_source" in values:
        check_model_source(values["model_source"], source)
    if "rpc_workers" in values:
        values["rpc_workers"] = check_rpc_workers(values["rpc_workers"], source)
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
