"""Settings: every environment variable the service reads, declared once, parsed in one place.

The rule for every variable:
- unset → its default (some defaults differ per APP_ENV: see ENVIRONMENT_DEFAULTS);
- set to a value → parsed and checked; invalid → ConfigError naming the variable, in one line;
- set to empty (or blanks) → the "none/off" meaning docs/configuration.md gives it (RATE_LIMIT= disables
  limiting, REDIS_URL= means no Redis, REDIS_PREFIX= means no prefix, ...); where empty makes no
  sense (PORT=, CACHE_MAX_BYTES=, ...) → a ConfigError saying it must not be empty.
- OTEL_* variables follow the OpenTelemetry specification instead: empty is the same as unset.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from config.keys import KeySpec

__all__ = ["ENVIRONMENT_DEFAULTS", "ConfigError", "Settings", "Var", "load_settings", "variables"]

PROVIDERS = ("template", "anthropic", "openai")
ENVIRONMENTS = ("development", "production", "testing")
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_MODELS = {
    "anthropic": "claude-sonnet-4-5",
    "openai": "gpt-4o-mini",
    "template": "template-v1",
}


# USD per million tokens (input, output); LLM_PRICES (JSON) adds to or overrides this table.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "claude-opus-4-1": (15.0, 75.0),
    "claude-opus-4": (15.0, 75.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-3-7-sonnet": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-3-5-haiku": (0.8, 4.0),
    "gpt-4o": (2.5, 10.0),
    "gpt-4o-mini": (0.15, 0.6),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.4, 1.6),
}


# Where the on-machine cache lives by default: in the user's cache directory, so that `make run`
# keeps its answers across restarts with nothing to configure.
DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "prompt-builder-api")


class ConfigError(ValueError):
    """A variable is missing, unknown or invalid; the message names it in one line."""


# --- typed helpers: each takes (name, raw string) and returns the parsed value -------------------


def _int(minimum: int = 0, maximum: int | None = None) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(f"{name} must be an integer (got {raw!r})") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise ConfigError(f"{name} must be {bound} (got {value})")
        return value

    return parse


def _float(minimum: float = 0.0, maximum: float = float("inf")) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ConfigError(f"{name} must be a number (got {raw!r})") from None
        if not minimum <= value <= maximum or value == float("inf"):
            bound = f"between {minimum:g} and {maximum:g}" if maximum != float("inf") else f">= {minimum:g}"
            raise ConfigError(f"{name} must be a finite number {bound} (got {raw!r})")
        return value

    return parse


def _choice(*choices: str, upper: bool = False) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().upper() if upper else raw.strip().lower()
        if value not in choices:
            named = ", ".join(c for c in choices if c)  # "" (derive it) is no choice to offer
            raise ConfigError(f"{name} must be one of {named} (got {raw!r})")
        return value

    return parse


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false (got {raw!r})")


def _str(name: str, raw: str) -> str:
    return raw.strip()


def _path(name: str, raw: str) -> str:
    value = raw.strip()
    if not os.path.isabs(value):
        raise ConfigError(f"{name} must be an absolute path (got {raw!r})")
    return value


def _url(name: str, raw: str) -> str:
    value = raw.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must be an http:// or https:// URL (got {raw!r})")
    return value


REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "redis+cluster://")


def _redis_url(name: str, raw: str) -> str:
    value = raw.strip()
    if not value.startswith(REDIS_SCHEMES):
        raise ConfigError(f"{name} must be a {', '.join(REDIS_SCHEMES)} URL")
    if value.startswith("redis+sentinel://") and not value.split("://", 1)[1].partition("/")[2].strip("/"):
        raise ConfigError(f"{name}: a redis+sentinel:// URL names its service (redis+sentinel://host:26379/mymaster)")
    return value


def _csv(name: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _prices(name: str, raw: str) -> dict[str, tuple[float, float]]:
    import json

    table = dict(DEFAULT_PRICES)
    try:
        extra = json.loads(raw)
        table.update({str(model): (float(p[0]), float(p[1])) for model, p in extra.items()})
    except (ValueError, TypeError, IndexError, AttributeError, KeyError):
        raise ConfigError(f'{name} must be JSON like {{"model": [input_usd, output_usd]}} per million tokens') from None
    return table


def _keys(name: str, raw: str) -> tuple[Any, ...]:
    from config.keys import KeySpecError, parse_keys

    try:
        return parse_keys(raw)
    except KeySpecError as exc:
        raise ConfigError(f"{name} {exc}") from None


def _keys_file(name: str, raw: str) -> tuple[Any, ...]:
    from config.keys import KeySpecError, parse_keys_file

    try:
        return parse_keys_file(raw.strip(), lambda where, text: _rate_limit(f"{name} {where}", text))
    except KeySpecError as exc:
        raise ConfigError(f"{name} {exc}") from None


def _rate_limit(name: str, raw: str) -> str:
    value = raw.strip()
    from limits import parse_many  # local: only needed to validate the string

    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(f"{name} must look like '60/minute' (got {raw!r})") from None
    return value


# --- the declarations ------------------------------------------------------------------------------

_INVALID = object()  # `empty` marker: set-but-empty is an error for this variable


@dataclasses.dataclass(frozen=True)
class Var:
    """How one variable is read: its default when unset, its parser, and what empty means."""

    default: str  # the raw text used when the variable is unset ("" = the empty meaning)
    parse: Callable[[str, str], Any]
    empty: Any = _INVALID  # the value when set to empty; _INVALID: empty is an error
    otel: bool = False  # OpenTelemetry's rule: empty is the same as unset


def _var(default: str, parse: Callable[[str, str], Any], empty: Any = _INVALID, otel: bool = False) -> Any:
    return dataclasses.field(metadata={"var": Var(default, parse, empty, otel)})


# What differs from the declared defaults per APP_ENV (production uses the declarations as they are).
ENVIRONMENT_DEFAULTS: dict[str, dict[str, str]] = {
    "production": {},
    "development": {"LOG_LEVEL": "DEBUG", "CACHE_MAX_BYTES": str(100 * 1024 * 1024), "CACHE_MAX_ENTRIES": "1000"},
    "testing": {
        "LOG_LEVEL": "WARNING",
        "WEB_CONCURRENCY": "1",
        "RATE_LIMIT": "",
        "CACHE_DIR": "",
    },  # tests set a limit, or a cache directory, when they need one
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting the service reads; each field is one environment variable (its name in upper
    case), declared here once with its default, its parser and what empty means."""

    app_env: str = _var("production", _choice(*ENVIRONMENTS))
    host: str = _var("0.0.0.0", _str)
    port: int = _var("3001", _int(1, 65535))
    web_concurrency: int = _var(str(os.cpu_count() or 1), _int(1, 256))
    worker_connections: int = _var("1000", _int(1, 100_000))
    # empty: anthropic when ANTHROPIC_API_KEY is set, else template
    llm_provider: str = _var("", _choice(*PROVIDERS), empty="")
    anthropic_api_key: str = _var("", _str, empty="")
    anthropic_base_url: str = _var("https://api.anthropic.com", _url)
    openai_api_key: str = _var("", _str, empty="")  # local servers need none
    openai_base_url: str = _var("https://api.openai.com/v1", _url, empty="")  # empty: required for openai
    llm_model: str = _var("", _str, empty="")  # empty: the provider's default model
    llm_draft_model: str = _var("", _str, empty="")  # set: streams draft with it first; empty: no draft
    upstream_pool_size: int = _var("", _int(1, 10_000), empty=0)  # 0 here: WORKER_CONNECTIONS
    upstream_connect_timeout: float = _var("5", _float(0.001))
    upstream_keepalive: bool = _var("true", _bool)  # false: a new connection per call (baseline benchmarks)
    upstream_max_retries: int = _var("2", _int(0, 10))
    upstream_timeout: float | None = _var("", _float(0.01), empty=None)  # None: each mode's own deadline
    max_body_bytes: int = _var(str(1024 * 1024), _int(1024, 100 * 1024 * 1024))
    body_read_timeout: float = _var("30", _float(0.1, 3600.0))  # a body not whole this long after its headers: 408
    log_level: str = _var("INFO", _choice(*LOG_LEVELS, upper=True))
    cache_max_bytes: int = _var(str(500 * 1024 * 1024), _int(0))
    cache_max_entries: int = _var("10000", _int(0))
    cache_default_ttl: int = _var("3600", _int(1))
    cache_enabled: bool = _var("true", _bool)
    coalescing_enabled: bool = _var("true", _bool)
    stale_if_error_seconds: int = _var("86400", _int(0))
    # The on-machine L2 when REDIS_URL is unset; empty: none (each worker has only its L1).
    cache_dir: str = _var(DEFAULT_CACHE_DIR, _path, empty="")
    cache_disk_max_bytes: int = _var(str(1024**3), _int(0))  # 0: no disk tier
    cache_warm_entries: int = _var("2000", _int(0, 1_000_000))  # 0: no warming
    redis_url: str = _var("", _redis_url, empty="")  # empty: no Redis
    redis_prefix: str = _var("pb:", _str, empty="")  # empty: keys without a prefix
    redis_socket_timeout: float = _var("0.25", _float(0.001))
    redis_lease_seconds: float = _var("15", _float(0.1))
    # At most this many model calls in flight: the fleet's with REDIS_URL, else the instance's (CACHE_DIR).
    upstream_max_concurrency: int = _var("", _int(1, 100_000), empty=0)  # 0 here: unlimited
    job_result_ttl: int = _var("86400", _int(1))  # seconds a finished job's record and result are kept
    job_queue_max: int = _var("10000", _int(1))  # queued jobs beyond this: 503 with Retry-After
    job_concurrency: int = _var("50", _int(1, 10_000))  # jobs one runner process runs at once
    # Where jobs run: server (one gunicorn worker per machine) or worker (only `make worker`
    # processes); empty: server without REDIS_URL, worker with it.
    job_runner: str = _var("", _choice("", "server", "worker"), empty="")
    job_lease_seconds: float = _var("15", _float(1.0, 3600.0))  # a running job silent this long is run again
    job_worker_port: int = _var("", _int(1, 65535), empty=0)  # `make worker` serves /metrics here; 0: nowhere
    breaker_fail_max: int = _var("5", _int(1, 10_000))
    breaker_reset_timeout: float = _var("30", _float(0.01))
    rate_limit: str = _var("60/minute", _rate_limit, empty="")  # empty: no rate limit
    # While Redis cannot be reached: "open" counts in each worker's memory, "closed" answers 503.
    rate_limit_on_redis_error: str = _var("open", _choice("open", "closed"))
    trusted_proxies: int = _var("0", _int(0, 10))  # proxy hops whose X-Forwarded-For is believed
    api_keys: tuple[KeySpec, ...] = _var("", _keys, empty=())  # name:secret pairs; empty: none
    api_keys_file: tuple[KeySpec, ...] = _var("", _keys_file, empty=())  # TOML; empty: none
    # shared: every caller shares cached answers and calls in flight; key: only callers of one key
    # do. Empty: key when more than one API key is configured, else shared.
    cache_scope: str = _var("", _choice("", "shared", "key"), empty="")
    metrics_token: str = _var("", _str, empty="")  # empty: /metrics and /stats open
    cors_origins: tuple[str, ...] = _var("", _csv, empty=())  # empty: no CORS headers
    llm_prices: dict[str, tuple[float, float]] = _var("", _prices, empty=DEFAULT_PRICES)
    graphql_enabled: bool = _var("true", _bool)  # false: no /graphql
    graphql_introspection: bool = _var("true", _bool)  # false: __schema and __type refused
    graphql_max_operations: int = _var("10", _int(1, 100))  # operations (and documents) per request
    metrics_enabled: bool = _var("true", _bool)
    # empty: gunicorn makes a fresh directory per server (and removes it on exit)
    prometheus_multiproc_dir: str = _var("", _path, empty="")
    otel_sdk_disabled: bool = _var("false", _bool, otel=True)
    otel_exporter_otlp_endpoint: str = _var("", _url, empty="", otel=True)
    otel_exporter_otlp_traces_endpoint: str = _var("", _url, empty="", otel=True)  # full URL, .../v1/traces
    otel_exporter_otlp_timeout: int = _var("2000", _int(1, 600_000), otel=True)  # milliseconds
    otel_service_name: str = _var("prompt-builder-api", _str, otel=True)
    otel_traces_sampler: str = _var("parentbased_always_on", _choice(*SAMPLERS), otel=True)
    otel_traces_sampler_arg: float = _var("1.0", _float(0.0, 1.0), otel=True)
    otel_bsp_schedule_delay: int = _var("5000", _int(1, 600_000), otel=True)  # milliseconds between exports

    @property
    def keys(self) -> tuple[KeySpec, ...]:
        """Every API key: API_KEYS, then API_KEYS_FILE."""
        return self.api_keys + self.api_keys_file

    @property
    def api_key(self) -> str:
        """Return the key for the configured provider (empty for the offline template)."""
        return {"anthropic": self.anthropic_api_key, "openai": self.openai_api_key}.get(self.llm_provider, "")

    @property
    def base_url(self) -> str:
        """Return the base URL for the configured provider."""
        return {"anthropic": self.anthropic_base_url, "openai": self.openai_base_url}.get(self.llm_provider, "")

    @property
    def redis_connections(self) -> int:
        """The most connections one process's service client opens: one for each request a worker
        may hold (WORKER_CONNECTIONS) and each job it may run (JOB_CONCURRENCY), and a few for
        its own work. redis-py's default is 100, and past it a command fails as if Redis had: with
        100 jobs at once a job worker ran out and paused Redis (the jobs drill, 2026-12-07)."""
        return self.worker_connections + self.job_concurrency + 16

    @property
    def tracing_enabled(self) -> bool:
        """Traces go somewhere: an OTLP endpoint, or the console in development; never when disabled."""
        if self.otel_sdk_disabled:
            return False
        return bool(self.otel_traces_endpoint) or self.app_env == "development"

    @property
    def otel_traces_endpoint(self) -> str:
        """The full OTLP/HTTP traces URL (the specific variable wins; the general one gets /v1/traces)."""
        if self.otel_exporter_otlp_traces_endpoint:
            return self.otel_exporter_otlp_traces_endpoint
        return self.otel_exporter_otlp_endpoint + "/v1/traces" if self.otel_exporter_otlp_endpoint else ""

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with some fields changed (used by tests and benchmarks)."""
        return dataclasses.replace(self, **changes)


def variables() -> dict[str, Var]:
    """Return every variable the service reads, by name, with its declaration."""
    return {field.name.upper(): field.metadata["var"] for field in dataclasses.fields(Settings)}


def _value(name: str, var: Var, env: Mapping[str, str], defaults: Mapping[str, str]) -> Any:
    raw = env.get(name)
    if raw is not None and not raw.strip():
        if var.otel:
            raw = None  # OpenTelemetry: empty is unset
        elif var.empty is _INVALID:
            raise ConfigError(
                f"{name} must not be empty (unset it for the default, {defaults.get(name, var.default)!r})"
            )
        else:
            return var.empty
    if raw is None:
        raw = defaults.get(name, var.default)
        if not raw:
            return var.empty
    return var.parse(name, raw)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse settings from `environ` (default: os.environ); raise ConfigError naming the variable."""
    env = os.environ if environ is None else environ
    declared = variables()
    app_env = _value("APP_ENV", declared["APP_ENV"], env, {})
    defaults = ENVIRONMENT_DEFAULTS[app_env]
    values = {name: _value(name, var, env, defaults) for name, var in declared.items()}

    provider = values["LLM_PROVIDER"] or ("anthropic" if values["ANTHROPIC_API_KEY"] else "template")
    if provider == "anthropic" and not values["ANTHROPIC_API_KEY"]:
        raise ConfigError("ANTHROPIC_API_KEY must be set when LLM_PROVIDER=anthropic")
    if provider == "openai" and not values["OPENAI_BASE_URL"]:
        raise ConfigError("OPENAI_BASE_URL must be set when LLM_PROVIDER=openai")
    values["LLM_PROVIDER"] = provider
    values["LLM_MODEL"] = values["LLM_MODEL"] or DEFAULT_MODELS[provider]
    values["UPSTREAM_POOL_SIZE"] = values["UPSTREAM_POOL_SIZE"] or values["WORKER_CONNECTIONS"]
    values["JOB_RUNNER"] = values["JOB_RUNNER"] or ("worker" if values["REDIS_URL"] else "server")
    from config.keys import KeySpecError, check_unique

    keys = values["API_KEYS"] + values["API_KEYS_FILE"]
    try:
        check_unique(keys)
    except KeySpecError as exc:
        raise ConfigError(f"API_KEYS {exc} (API_KEYS and API_KEYS_FILE together)") from None
    values["CACHE_SCOPE"] = values["CACHE_SCOPE"] or ("key" if len(keys) > 1 else "shared")
    return Settings(**{name.lower(): value for name, value in values.items()})
