"""Settings: one class of defaults per environment, environment variables parsed by typed helpers."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "BaseConfig",
    "ConfigError",
    "DevelopmentConfig",
    "ProductionConfig",
    "Settings",
    "TestingConfig",
    "load_settings",
]

PROVIDERS = ("template", "anthropic", "openai")
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


def _float(minimum: float = 0.0) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ConfigError(f"{name} must be a number (got {raw!r})") from None
        if not value >= minimum or value == float("inf"):
            raise ConfigError(f"{name} must be a finite number >= {minimum} (got {raw!r})")
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


def _url(name: str, raw: str) -> str:
    value = raw.strip().rstrip("/")
    if value and not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must be an http:// or https:// URL (got {raw!r})")
    return value


def _redis_url(name: str, raw: str) -> str:
    value = raw.strip()
    if value and not value.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{name} must be a redis://, rediss:// or unix:// URL")
    return value


def _csv(name: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _prices(name: str, raw: str) -> dict[str, tuple[float, float]]:
    import json

    table = dict(DEFAULT_PRICES)
    if not raw.strip():
        return table
    try:
        extra = json.loads(raw)
        table.update({str(model): (float(p[0]), float(p[1])) for model, p in extra.items()})
    except (ValueError, TypeError, IndexError, AttributeError, KeyError):
        raise ConfigError(f'{name} must be JSON like {{"model": [input_usd, output_usd]}} per million tokens') from None
    return table


def _rate_limit(name: str, raw: str) -> str:
    value = raw.strip()
    if not value:
        return ""
    from limits import parse_many  # local: only needed to validate the string

    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(f"{name} must look like '60/minute' (got {raw!r})") from None
    return value


# --- defaults per environment --------------------------------------------------------------------


class BaseConfig:
    """Defaults shared by every environment; each subclass overrides what differs."""

    APP_ENV = "production"
    HOST = "0.0.0.0"
    PORT = "3001"
    WEB_CONCURRENCY = str(os.cpu_count() or 1)
    WORKER_CONNECTIONS = "1000"
    LLM_PROVIDER = ""  # empty: anthropic when ANTHROPIC_API_KEY is set, else template
    ANTHROPIC_API_KEY = ""
    ANTHROPIC_BASE_URL = "https://api.anthropic.com"
    OPENAI_API_KEY = ""
    OPENAI_BASE_URL = "https://api.openai.com/v1"
    LLM_MODEL = ""
    UPSTREAM_POOL_SIZE = ""  # empty: WORKER_CONNECTIONS, one kept-alive connection per greenlet
    UPSTREAM_CONNECT_TIMEOUT = "5"
    UPSTREAM_KEEPALIVE = "true"  # false: a new upstream connection per call (benchmark baseline)
    UPSTREAM_MAX_RETRIES = "2"
    UPSTREAM_TIMEOUT = ""  # empty: each mode's own deadline (video 90 s, others 30 s)
    MAX_BODY_BYTES = str(1024 * 1024)
    LOG_LEVEL = "INFO"
    CACHE_MAX_BYTES = str(500 * 1024 * 1024)
    CACHE_MAX_ENTRIES = "10000"
    CACHE_DEFAULT_TTL = "3600"
    CACHE_ENABLED = "true"
    COALESCING_ENABLED = "true"
    STALE_IF_ERROR_SECONDS = "86400"
    REDIS_URL = ""
    REDIS_PREFIX = "pb:"
    REDIS_SOCKET_TIMEOUT = "0.25"
    REDIS_LEASE_SECONDS = "15"
    BREAKER_FAIL_MAX = "5"
    BREAKER_RESET_TIMEOUT = "30"
    RATE_LIMIT = "60/minute"  # on /api/*, per API key or client IP; empty disables
    TRUSTED_PROXIES = "0"  # proxy hops whose X-Forwarded-For we believe (1 behind one nginx)
    API_KEYS = ""  # comma-separated; when set, /api/* requires one
    METRICS_TOKEN = ""  # when set, /metrics and /stats require it
    CORS_ORIGINS = ""  # comma-separated origins, or *
    LLM_PRICES = ""  # JSON {"model": [usd_per_M_input, usd_per_M_output]} over DEFAULT_PRICES
    METRICS_ENABLED = "true"


class DevelopmentConfig(BaseConfig):
    APP_ENV = "development"
    LOG_LEVEL = "DEBUG"
    CACHE_MAX_BYTES = str(100 * 1024 * 1024)
    CACHE_MAX_ENTRIES = "1000"


class ProductionConfig(BaseConfig):
    APP_ENV = "production"


class TestingConfig(BaseConfig):
    APP_ENV = "testing"
    LOG_LEVEL = "WARNING"
    WEB_CONCURRENCY = "1"
    RATE_LIMIT = ""  # tests that need one set it


ENVIRONMENTS: dict[str, type[BaseConfig]] = {
    "development": DevelopmentConfig,
    "production": ProductionConfig,
    "testing": TestingConfig,
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting the service reads, parsed and checked; built by `load_settings`."""

    app_env: str
    host: str
    port: int
    web_concurrency: int
    worker_connections: int
    llm_provider: str
    anthropic_api_key: str
    anthropic_base_url: str
    openai_api_key: str
    openai_base_url: str
    llm_model: str
    upstream_pool_size: int
    upstream_connect_timeout: float
    upstream_keepalive: bool
    upstream_max_retries: int
    upstream_timeout: float | None
    max_body_bytes: int
    log_level: str
    cache_max_bytes: int
    cache_max_entries: int
    cache_default_ttl: int
    cache_enabled: bool
    coalescing_enabled: bool
    stale_if_error_seconds: int
    redis_url: str
    redis_prefix: str
    redis_socket_timeout: float
    redis_lease_seconds: float
    breaker_fail_max: int
    breaker_reset_timeout: float
    rate_limit: str
    trusted_proxies: int
    api_keys: tuple[str, ...]
    metrics_token: str
    cors_origins: tuple[str, ...]
    llm_prices: dict[str, tuple[float, float]]
    metrics_enabled: bool

    @property
    def api_key(self) -> str:
        """Return the key for the configured provider (empty for the offline template)."""
        return {"anthropic": self.anthropic_api_key, "openai": self.openai_api_key}.get(self.llm_provider, "")

    @property
    def base_url(self) -> str:
        """Return the base URL for the configured provider."""
        return {"anthropic": self.anthropic_base_url, "openai": self.openai_base_url}.get(self.llm_provider, "")

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with some fields changed (used by tests and benchmarks)."""
        return dataclasses.replace(self, **changes)


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "APP_ENV": _choice(*ENVIRONMENTS),
    "HOST": _str,
    "PORT": _int(1, 65535),
    "WEB_CONCURRENCY": _int(1, 256),
    "WORKER_CONNECTIONS": _int(1, 100_000),
    "LLM_PROVIDER": _choice("", *PROVIDERS),
    "ANTHROPIC_API_KEY": _str,
    "ANTHROPIC_BASE_URL": _url,
    "OPENAI_API_KEY": _str,
    "OPENAI_BASE_URL": _url,
    "LLM_MODEL": _str,
    "UPSTREAM_POOL_SIZE": _int(1, 10_000),
    "UPSTREAM_CONNECT_TIMEOUT": _float(0.001),
    "UPSTREAM_KEEPALIVE": _bool,
    "UPSTREAM_MAX_RETRIES": _int(0, 10),
    "UPSTREAM_TIMEOUT": _float(0.01),
    "MAX_BODY_BYTES": _int(1024, 100 * 1024 * 1024),
    "LOG_LEVEL": _choice(*LOG_LEVELS, upper=True),
    "CACHE_MAX_BYTES": _int(0),
    "CACHE_MAX_ENTRIES": _int(0),
    "CACHE_DEFAULT_TTL": _int(1),
    "CACHE_ENABLED": _bool,
    "COALESCING_ENABLED": _bool,
    "STALE_IF_ERROR_SECONDS": _int(0),
    "REDIS_URL": _redis_url,
    "REDIS_PREFIX": _str,
    "REDIS_SOCKET_TIMEOUT": _float(0.001),
    "REDIS_LEASE_SECONDS": _float(0.1),
    "BREAKER_FAIL_MAX": _int(1, 10_000),
    "BREAKER_RESET_TIMEOUT": _float(0.01),
    "RATE_LIMIT": _rate_limit,
    "TRUSTED_PROXIES": _int(0, 10),
    "API_KEYS": _csv,
    "METRICS_TOKEN": _str,
    "CORS_ORIGINS": _csv,
    "LLM_PRICES": _prices,
    "METRICS_ENABLED": _bool,
}


def _raw(env: Mapping[str, str], defaults: type[BaseConfig], name: str) -> str:
    value = env.get(name)
    return getattr(defaults, name) if value is None or value == "" else value


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse settings from `environ` (default: os.environ); raise ConfigError naming the variable."""
    env = os.environ if environ is None else environ
    app_env = _PARSERS["APP_ENV"]("APP_ENV", env.get("APP_ENV") or "production")
    defaults = ENVIRONMENTS[app_env]
    optional = ("UPSTREAM_POOL_SIZE", "UPSTREAM_TIMEOUT")  # empty means "derive it"
    values = {
        name: parse(name, _raw(env, defaults, name))
        for name, parse in _PARSERS.items()
        if name not in optional or _raw(env, defaults, name)
    }
    values.setdefault("UPSTREAM_TIMEOUT", None)

    provider = values["LLM_PROVIDER"] or ("anthropic" if values["ANTHROPIC_API_KEY"] else "template")
    if provider == "anthropic" and not values["ANTHROPIC_API_KEY"]:
        raise ConfigError("ANTHROPIC_API_KEY must be set when LLM_PROVIDER=anthropic")
    if provider == "openai" and not values["OPENAI_BASE_URL"]:
        raise ConfigError("OPENAI_BASE_URL must be set when LLM_PROVIDER=openai")
    values["LLM_PROVIDER"] = provider
    values["LLM_MODEL"] = values["LLM_MODEL"] or DEFAULT_MODELS[provider]
    values.setdefault("UPSTREAM_POOL_SIZE", values["WORKER_CONNECTIONS"])
    return Settings(**{name.lower(): value for name, value in values.items()})
