"""What the daemon is configured with: the frozen `Settings`, its defaults and the values that
need a rule to read (prices, API keys, a fleet's model source), and what is decided from the
machine or the settings once loaded (the default context length, the CORS allow-list).

`power.config` builds a `Settings` from its layers; everything else only reads one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from power.errors import PowerError
from power.location import DEFAULT_HOST, DEFAULT_PORT, home_dir
from power.store.names import DEFAULT_NAMESPACE, ModelName

__all__ = [
    "DEFAULT_CONTEXT_LENGTH",
    "DEFAULT_LOG_BACKUPS",
    "DEFAULT_LOG_MAX_BYTES",
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_MAX_LOADED_MODELS",
    "DEFAULT_PRICE",
    "ApiKey",
    "ConfigError",
    "Price",
    "Settings",
    "allowed_origins",
    "auto_context_length",
    "default_origins",
    "parse_api_keys",
    "parse_model_source",
    "parse_rpc_worker",
    "price_key",
    "resolve_context_length",
]

DEFAULT_MAX_LOADED_MODELS = 3
DEFAULT_CONTEXT_LENGTH = 4096  # Ollama's default num_ctx on a machine with < 23 GiB of VRAM
_GIB = 2**30
# Ollama's VRAM tiers (since 0.15.5): (total VRAM at least, default num_ctx), largest first
_CONTEXT_TIERS = ((47 * _GIB, 262144), (23 * _GIB, 32768))
DEFAULT_MAX_BODY_SIZE = 100 * 2**20  # a runner frame (64 MiB) of images, base64, fits under it
DEFAULT_LOG_MAX_BYTES = 10 * 2**20
DEFAULT_LOG_BACKUPS = 5

_NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
_NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]
_PosFloat = Annotated[float, msgspec.Meta(gt=0)]


class ConfigError(PowerError):
    """Invalid configuration: message names the source (file, "command line") and the key."""


class Price(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What a million tokens would cost at a cloud price (``[pricing."model:tag"]``)."""

    input_per_million: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    output_per_million: Annotated[float, msgspec.Meta(ge=0)] = 0.0

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (
            input_tokens * self.input_per_million + output_tokens * self.output_per_million
        ) / 1e6


_KEY = re.compile(r"[\x21-\x7e]+")  # printable ASCII without spaces: it travels in a header
READ_ONLY_SUFFIX = ":ro"


@dataclass(frozen=True, slots=True)
class ApiKey:
    secret: bytes
    read_only: bool


def parse_api_keys(entries: Iterable[str]) -> tuple[ApiKey, ...]:
    """``["k1", "k2:ro"]`` -> keys. ValueError names a bad entry by its place, never its value."""
    keys = []
    for n, entry in enumerate(entries, 1):
        read_only = entry.endswith(READ_ONLY_SUFFIX)
        secret = entry.removesuffix(READ_ONLY_SUFFIX) if read_only else entry
        if not _KEY.fullmatch(secret):
            raise ValueError(f"entry {n} is empty or not printable ASCII without spaces")
        keys.append(ApiKey(secret.encode(), read_only))
    return tuple(keys)


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Everything the gateway is configured with. Durations are float seconds (`inf` = forever)."""

    host: str = DEFAULT_HOST
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = DEFAULT_PORT
    home: str = msgspec.field(default_factory=lambda: str(home_dir()))
    models: str = ""  # empty: <home>/models; see models_dir
    keep_alive_s: float = 300.0
    max_loaded_models: _NonNegInt = DEFAULT_MAX_LOADED_MODELS
    num_parallel: _NonNegInt = 1
    max_queue: _NonNegInt = 512
    origins: list[str] = msgspec.field(default_factory=list)
    context_length: _NonNegInt = 0  # 0: auto (by VRAM, resolved at startup); see default_num_ctx
    debug: int = 0  # 0 INFO, 1 DEBUG, 2 TRACE (negative: WARNING/ERROR, as Ollama)
    load_timeout_s: float = 300.0
    noprune: bool = False
    flash_attention: bool | None = None  # None: auto
    kv_cache_type: str = "f16"
    sched_spread: bool = False
    gpu_overhead: _NonNegInt = 0  # bytes of VRAM reserved per GPU
    # layers to offload when neither request nor model says: -1 as many as fit, 0 CPU only
    num_gpu: Annotated[int, msgspec.Meta(ge=-1)] = -1
    tmpdir: str = ""  # temporary files of uploads and quantization; "" = the blobs folder
    runner_stop_grace_s: _NonNegFloat = 5.0
    runner_term_grace_s: _NonNegFloat = 5.0
    ping_interval_s: _PosFloat = 10.0
    ping_timeout_s: _PosFloat = 10.0
    shutdown_grace_s: _NonNegFloat = 10.0
    runner_threads: _NonNegInt = 0  # 0: auto
    # load defaults a request's options (main_gpu, use_mlock) override
    main_gpu: Annotated[int, msgspec.Meta(ge=-1)] = -1  # a position among GPUs; -1: any
    use_mlock: bool = False  # lock the weights in RAM (no swapping)
    runner_engine: str = "llama"  # "llama", or "fake:<mode>?<options>" for tests
    queue_timeout_s: _PosFloat = 600.0  # longest a request waits for a load or a seat
    runner_spare: bool = True  # keep one runner launched, so a cold load skips process start
    # llama.cpp's extra CPU buffer types (repacked weights): auto = per CPU (not AMX), on, off
    cpu_extra_buffers: Literal["auto", "on", "off"] = "auto"
    # bytes a JSON request body may have (413 beyond, 0: no limit); blob uploads have none
    max_body_size: _NonNegInt = DEFAULT_MAX_BODY_SIZE
    # seconds a request body may pause before its end (408), as long as an idle keep-alive
    # connection is kept: a client that stops mid-body holds no handler for longer
    body_timeout_s: _PosFloat = 75.0
    log_format: Literal["text", "json"] = "text"  # json: one JSON object per log line
    log_file: str = ""  # empty: stderr; else this file (and fds 1, 2), rotated by size
    log_max_bytes: Annotated[int, msgspec.Meta(ge=4096)] = DEFAULT_LOG_MAX_BYTES
    log_backups: Annotated[int, msgspec.Meta(ge=1)] = DEFAULT_LOG_BACKUPS  # rotated files kept
    # per model ("name:tag"), and "default" for the rest; only for showing what it would cost
    pricing: dict[str, Price] = msgspec.field(default_factory=dict)
    # API keys ("key", or "key:ro" for read-only); empty: no authentication, as Ollama
    api_keys: list[str] = msgspec.field(default_factory=list)
    # usage records (<home>/usage.db) of days more than this many days before today (UTC) are
    # pruned, at start and daily; 0: kept forever
    usage_retention_days: _NonNegInt = 365
    # a fleet's shared registry, "host[:port][/namespace]": a model the store lacks is pulled
    # from there on first use (power.registry.through); empty: a 404, as Ollama
    model_source: str = ""
    model_source_insecure: bool = False  # reach the model source over plain http
    # llama.cpp RPC workers ("host:port", `power rpc-worker`) that every model's layers are
    # split over, with this machine, by the memory each reports (runner.rpc); empty: none
    rpc_workers: list[str] = msgspec.field(default_factory=list)

    @property
    def default_num_ctx(self) -> int:
        """``num_ctx`` where neither the request nor the model sets one: ``context_length``,
        or, while that is still "auto" (not resolved against the GPUs), the CPU default."""
        return self.context_length or DEFAULT_CONTEXT_LENGTH

    def price_of(self, model: str) -> Price:
        """The price of ``model`` ("name:tag"): its own, else the default, else nothing.
        (Keys from config are ``price_key``s: what a layer's ``[pricing]`` becomes.)"""
        return self.pricing.get(price_key(model)) or self.pricing.get(DEFAULT_PRICE) or _FREE

    @property
    def model_source_parts(self) -> tuple[str, str] | None:
        """``model_source`` as (host, namespace), or None when none is set."""
        return parse_model_source(self.model_source) if self.model_source else None

    @property
    def models_dir(self) -> Path:
        """The model store: `models` if set, else `<home>/models`."""
        if self.models:
            return Path(self.models).expanduser()
        return Path(self.home).expanduser() / "models"


def parse_model_source(text: str) -> tuple[str, str]:
    """``"host[:port][/namespace]"`` -> (host, namespace), ``library`` by default; ValueError
    when that is not a registry host and namespace a model name could have."""
    host, _, namespace = text.strip().partition("/")
    namespace = namespace or DEFAULT_NAMESPACE
    if not ModelName(host=host, namespace=namespace, model="m", tag="t").is_valid():
        raise ValueError(f"{text!r} is not host[:port][/namespace]")
    return host, namespace


def parse_rpc_worker(text: str) -> str:
    """``"host:port"`` as llama.cpp's RPC client takes it; ValueError otherwise. (llama.cpp
    splits at the first colon and aborts the process on an address it cannot parse, so a bad
    one must stop here: no IPv6 literals, a port in 1..65535.)"""
    host, sep, port = text.strip().partition(":")
    if not sep or not host or ":" in port or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port")
    return f"{host}:{int(port)}"


_FREE = Price()
DEFAULT_PRICE = "default"


def check_rpc_workers(value: object, source: str) -> list[str]:
    """``rpc_workers`` as ``source`` (a file, a variable) gave it: the workers, or ConfigError."""
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
        raise ConfigError(f"{source}: key 'rpc_workers': expected a list of host:port strings")
    try:
        workers = [parse_rpc_worker(w) for w in value]
    except ValueError as exc:
        raise ConfigError(f"{source}: key 'rpc_workers': {exc}") from None
    if len(set(workers)) != len(workers):
        raise ConfigError(f"{source}: key 'rpc_workers': a worker is listed twice")
    return workers


def check_model_source(value: object, source: str) -> None:
    """ConfigError unless ``model_source`` from ``source`` is "" or a registry to pull from."""
    if not isinstance(value, str):
        raise ConfigError(f"{source}: key 'model_source': expected a string")
    if value:
        try:
            parse_model_source(value)
        except ValueError as exc:
            raise ConfigError(f"{source}: key 'model_source': {exc}") from None


def check_api_keys(keys: object, source: str) -> None:
    """ConfigError unless ``api_keys`` from ``source`` is a list of valid key entries."""
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ConfigError(f"{source}: key 'api_keys': expected a list of strings")
    try:
        parse_api_keys(keys)
    except ValueError as exc:
        raise ConfigError(f"{source}: key 'api_keys': {exc}") from None


def price_key(model: str) -> str:
    """How ``[pricing]`` keys and model names meet: the full "name:tag" (a bare name means
    ``:latest``), lower case; "default", and what is no model name, stay as they are."""
    name = ModelName.parse(model)
    if model == DEFAULT_PRICE or not name.is_valid():
        return model
    return name.display.lower()


# -- what the machine decides ---------------------------------------------------------------


def auto_context_length(gpu_totals: Iterable[int], overhead: int) -> int:
    """Ollama's default ``num_ctx`` when ``OLLAMA_CONTEXT_LENGTH`` is unset: by the total memory
    of every GPU less ``overhead`` each (thresholds a little under 48 and 24 GiB, as Ollama's,
    for what drivers keep back); no GPU, or a small one, gets the CPU default."""
    vram = sum(max(0, total - overhead) for total in gpu_totals)
    return next((ctx for least, ctx in _CONTEXT_TIERS if vram >= least), DEFAULT_CONTEXT_LENGTH)


def resolve_context_length(settings: Settings, gpu_totals: Iterable[int]) -> Settings:
    """``settings`` with an "auto" (0) ``context_length`` decided for these GPUs."""
    if settings.context_length:
        return settings
    chosen = auto_context_length(gpu_totals, settings.gpu_overhead)
    return msgspec.structs.replace(settings, context_length=chosen)


# -- CORS ----------------------------------------------------------------------------------


def default_origins() -> list[str]:
    """Origins Ollama always allows, whatever `OLLAMA_ORIGINS` says."""
    origins: list[str] = []
    for host in ("localhost", "127.0.0.1", "0.0.0.0"):
        origins += [
            f"http://{host}",
            f"https://{host}",
            f"http://{host}:*",
            f"https://{host}:*",
        ]
    origins += [
        "app://*",
        "file://*",
        "tauri://*",
        "vscode-webview://*",
        "vscode-file://*",
    ]
    return origins


def allowed_origins(settings: Settings) -> list[str]:
    """The CORS allow-list: configured origins first, then the defaults (as Ollama orders it)."""
    return [*settings.origins, *default_origins()]
