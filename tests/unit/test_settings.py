"""Settings: every variable, declared once, has a default, a valid value, an invalid value (a
one-line error, also through gunicorn) and a meaning when set empty; the README lists them all,
docs/configuration.md explains each."""

from __future__ import annotations

import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from config.keys import KeySpec, digest
from config.settings import DEFAULT_PRICES, ConfigError, Settings, load_settings, variables
from tests.support import BIN, ROOT

ERROR = object()  # "empty is an error for this variable"
ANY_TEXT = None  # no invalid value exists: any text is accepted

KEYS_FILE = str(Path(__file__).parent / "data" / "keys.toml")
BARE = "key-" + digest("s2").hex()[:8]  # a bare secret's name: a short digest
FILE_KEYS = (
    KeySpec(
        "alice",
        digest("alice-secret"),
        "120/minute",
        (("tokens_per_day", 2_000_000.0), ("cost_per_month_usd", 150.0)),
        "key",
    ),
    KeySpec("bob", digest("bob-secret")),
)

# name: (a valid value, what it parses to, an invalid value, the value when set empty)
CASES: dict[str, tuple[str, Any, str | None, Any]] = {
    "APP_ENV": ("development", "development", "staging", ERROR),
    "HOST": ("127.0.0.1", "127.0.0.1", ANY_TEXT, ERROR),
    "PORT": ("8080", 8080, "70000", ERROR),
    "WEB_CONCURRENCY": ("4", 4, "0", ERROR),
    "WORKER_CONNECTIONS": ("50", 50, "many", ERROR),
    "LLM_PROVIDER": ("openai", "openai", "gemini", "template"),  # empty: derived (no key → template)
    "ANTHROPIC_API_KEY": ("sk-ant-x", "sk-ant-x", ANY_TEXT, ""),
    "ANTHROPIC_BASE_URL": ("http://127.0.0.1:8089", "http://127.0.0.1:8089", "ftp://x", ERROR),
    "OPENAI_API_KEY": ("sk-x", "sk-x", ANY_TEXT, ""),
    "OPENAI_BASE_URL": ("http://localhost:11434/v1/", "http://localhost:11434/v1", "localhost:11434", ""),
    "LLM_MODEL": ("my-model", "my-model", ANY_TEXT, "template-v1"),  # empty: the provider's default
    "LLM_DRAFT_MODEL": ("claude-haiku-4-5", "claude-haiku-4-5", ANY_TEXT, ""),  # empty: no draft stage
    "UPSTREAM_POOL_SIZE": ("20", 20, "0", 1000),  # empty: WORKER_CONNECTIONS
    "UPSTREAM_CONNECT_TIMEOUT": ("1.5", 1.5, "-1", ERROR),
    "UPSTREAM_KEEPALIVE": ("false", False, "maybe", ERROR),
    "UPSTREAM_MAX_RETRIES": ("0", 0, "11", ERROR),
    "UPSTREAM_TIMEOUT": ("2.5", 2.5, "soon", None),  # empty: each mode's own deadline
    "MAX_BODY_BYTES": ("2048", 2048, "-1", ERROR),
    "LOG_LEVEL": ("warning", "WARNING", "LOUD", ERROR),
    "CACHE_MAX_BYTES": ("1000", 1000, "1e9", ERROR),
    "CACHE_MAX_ENTRIES": ("5", 5, "-5", ERROR),
    "CACHE_DEFAULT_TTL": ("60", 60, "0", ERROR),
    "CACHE_ENABLED": ("off", False, "maybe", ERROR),
    "COALESCING_ENABLED": ("no", False, "2", ERROR),
    "STALE_IF_ERROR_SECONDS": ("0", 0, "forever", ERROR),
    "CACHE_DIR": ("/var/cache/pb", "/var/cache/pb", "relative/dir", ""),  # empty: no disk tier
    "CACHE_DISK_MAX_BYTES": ("1048576", 1048576, "-1", ERROR),
    "CACHE_WARM_ENTRIES": ("0", 0, "all", ERROR),
    "REDIS_URL": ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0", "localhost:6379", ""),
    "REDIS_PREFIX": ("app1:", "app1:", ANY_TEXT, ""),
    "REDIS_SOCKET_TIMEOUT": ("0.5", 0.5, "nan", ERROR),
    "REDIS_LEASE_SECONDS": ("5", 5.0, "0", ERROR),
    "UPSTREAM_MAX_CONCURRENCY": ("50", 50, "0", 0),  # empty: unlimited
    "BODY_READ_TIMEOUT": ("5", 5.0, "0", ERROR),
    "JOB_RESULT_TTL": ("3600", 3600, "0", ERROR),
    "JOB_QUEUE_MAX": ("100", 100, "0", ERROR),
    "JOB_CONCURRENCY": ("8", 8, "0", ERROR),
    "JOB_RUNNER": ("worker", "worker", "thread", "server"),  # empty: server without REDIS_URL
    "JOB_LEASE_SECONDS": ("5", 5.0, "0.5", ERROR),
    "JOB_WORKER_PORT": ("9101", 9101, "0", 0),  # empty: no HTTP
    "BREAKER_FAIL_MAX": ("3", 3, "0", ERROR),
    "BREAKER_RESET_TIMEOUT": ("10", 10.0, "inf", ERROR),
    "RATE_LIMIT": ("10/second", "10/second", "lots", ""),  # empty: no limit
    "RATE_LIMIT_ON_REDIS_ERROR": ("closed", "closed", "ajar", ERROR),
    "TRUSTED_PROXIES": ("1", 1, "-1", ERROR),
    "API_KEYS": ("alice:s1, s2", (KeySpec("alice", digest("s1")), KeySpec(BARE, digest("s2"))), ",", ()),
    "API_KEYS_FILE": (KEYS_FILE, FILE_KEYS, "/nonexistent/keys.toml", ()),
    "CACHE_SCOPE": ("key", "key", "tenant", "shared"),  # empty: key with two or more keys, else shared
    "METRICS_TOKEN": ("t0k", "t0k", ANY_TEXT, ""),
    "CORS_ORIGINS": ("https://a.example,*", ("https://a.example", "*"), ANY_TEXT, ()),
    "LLM_PRICES": ('{"m": [1, 2]}', {**DEFAULT_PRICES, "m": (1.0, 2.0)}, "[1, 2]", DEFAULT_PRICES),
    "GRAPHQL_ENABLED": ("false", False, "maybe", ERROR),
    "GRAPHQL_INTROSPECTION": ("false", False, "off-ish", ERROR),
    "GRAPHQL_MAX_OPERATIONS": ("25", 25, "101", ERROR),
    "METRICS_ENABLED": ("false", False, "sometimes", ERROR),
    "PROMETHEUS_MULTIPROC_DIR": ("/tmp/pb-metrics", "/tmp/pb-metrics", "relative/dir", ""),
    # OTEL_*: the OpenTelemetry rule, empty is the same as unset (so empty gives the default)
    "OTEL_SDK_DISABLED": ("true", True, "disabled", False),
    "OTEL_EXPORTER_OTLP_ENDPOINT": ("http://collector:4318", "http://collector:4318", "collector:4318", ""),
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ("http://c:4318/v1/traces", "http://c:4318/v1/traces", "c:4318", ""),
    "OTEL_EXPORTER_OTLP_TIMEOUT": ("500", 500, "2s", 2000),
    "OTEL_SERVICE_NAME": ("pb-eu", "pb-eu", ANY_TEXT, "prompt-builder-api"),
    "OTEL_TRACES_SAMPLER": ("traceidratio", "traceidratio", "sometimes", "parentbased_always_on"),
    "OTEL_TRACES_SAMPLER_ARG": ("0.1", 0.1, "1.5", 1.0),
    "OTEL_BSP_SCHEDULE_DELAY": ("50", 50, "-50", 5000),
}
# What a variable needs beside it to be valid (the openai provider needs its base URL, ...).
COMPANIONS = {"LLM_PROVIDER": {"OPENAI_BASE_URL": "http://localhost:11434/v1"}}


def _field(settings: Settings, name: str) -> Any:
    return getattr(settings, name.lower())


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (",", "holds no key"),
        (" , ,, ", "holds no key"),
        ("alice:", "key 'alice' has an empty secret"),
        ("alice: , bob:b1", "key 'alice' has an empty secret"),
        ("s1, with space", "entry 2: a secret is printable ASCII"),
        ("alice:caf\u00e9", "entry 1: a secret is printable ASCII"),
        ("x" * 513, "entry 1"),
    ],
)
def test_api_keys_that_hold_no_usable_key_stop_start_up(value: str, says: str) -> None:
    """A value that is set but could never admit a caller (or would leave /api/* open)."""
    with pytest.raises(ConfigError, match=r"^API_KEYS ") as raised:
        load_settings({"API_KEYS": value})
    assert says in str(raised.value) and "\n" not in str(raised.value)


def test_every_variable_has_a_case() -> None:
    assert set(CASES) == set(variables())


@pytest.mark.parametrize("name", sorted(CASES))
def test_unset_gives_the_default(name: str) -> None:
    var = variables()[name]
    expected = load_settings({name: var.default}) if var.default else load_settings({})
    assert _field(load_settings({}), name) == _field(expected, name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_valid_value(name: str) -> None:
    raw, parsed, _, _ = CASES[name]
    assert _field(load_settings({name: raw, **COMPANIONS.get(name, {})}), name) == parsed


@pytest.mark.parametrize("name", sorted(n for n, case in CASES.items() if case[2] is not None))
def test_an_invalid_value_is_one_line_naming_the_variable(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({name: CASES[name][2]})  # type: ignore[dict-item]
    message = str(info.value)
    assert message.startswith(name + " ") and "\n" not in message


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("empty", ["", "  "])
def test_empty_means_what_the_readme_says(name: str, empty: str) -> None:
    expected = CASES[name][3]
    if expected is ERROR:
        with pytest.raises(ConfigError, match=f"^{name} must not be empty"):
            load_settings({name: empty})
    else:
        assert _field(load_settings({name: empty}), name) == expected


def test_defaults_pick_the_offline_template_without_a_key() -> None:
    settings = load_settings({})
    assert (settings.llm_provider, settings.llm_model) == ("template", "template-v1")
    assert (settings.port, settings.max_body_bytes, settings.upstream_pool_size) == (3001, 1024 * 1024, 1000)
    assert settings.rate_limit == "60/minute" and settings.redis_prefix == "pb:"
    assert not settings.tracing_enabled


def test_anthropic_is_the_default_when_its_key_is_set() -> None:
    settings = load_settings({"ANTHROPIC_API_KEY": "sk-test"})
    assert (settings.llm_provider, settings.llm_model, settings.base_url) == (
        "anthropic",
        "claude-sonnet-4-5",
        "https://api.anthropic.com",
    )


def test_openai_without_a_base_url_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^OPENAI_BASE_URL must be set when LLM_PROVIDER=openai$"):
        load_settings({"LLM_PROVIDER": "openai", "OPENAI_BASE_URL": ""})
    with pytest.raises(ConfigError, match=r"^ANTHROPIC_API_KEY must be set"):
        load_settings({"LLM_PROVIDER": "anthropic", "ANTHROPIC_API_KEY": ""})


def test_environments_change_defaults_and_values_still_win() -> None:
    assert load_settings({"APP_ENV": "development"}).log_level == "DEBUG"
    assert load_settings({"APP_ENV": "development"}).tracing_enabled  # console exporter
    assert load_settings({"APP_ENV": "testing"}).web_concurrency == 1
    assert load_settings({"APP_ENV": "testing"}).rate_limit == ""
    assert load_settings({"APP_ENV": "testing", "RATE_LIMIT": "5/minute"}).rate_limit == "5/minute"
    assert load_settings({"APP_ENV": "testing", "LOG_LEVEL": "error"}).log_level == "ERROR"


def test_tracing_endpoint_rules() -> None:
    general = load_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"})
    assert general.tracing_enabled and general.otel_traces_endpoint == "http://c:4318/v1/traces"
    specific = load_settings(
        {**{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/x"}
    )
    assert specific.otel_traces_endpoint == "http://t:1/x"
    assert not load_settings(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}
    ).tracing_enabled


def test_llm_provider_error_lists_only_real_choices() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"LLM_PROVIDER": "gemini"})
    assert str(info.value) == "LLM_PROVIDER must be one of template, anthropic, openai (got 'gemini')"


def _gunicorn(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in CASES}
    return subprocess.run(
        [str(BIN / "gunicorn"), "-c", "config/gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT,
        env={**clean, "PYTHONPATH": str(ROOT), "PORT": "1", **env},  # never gets as far as binding
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_invalid_and_empty_values_stop_gunicorn_with_one_line() -> None:
    """Through the real start-up path (gunicorn reading config/gunicorn.conf.py): invalid values
    and empties that are errors, one of each kind of value. Every variable's own message is
    proven in-process above; this proves the start-up path turns any of them into one line."""
    kinds = ("PORT", "CACHE_ENABLED", "REDIS_URL", "RATE_LIMIT", "LLM_PRICES", "OTEL_TRACES_SAMPLER_ARG", "LOG_LEVEL")
    runs = [(name, CASES[name][2]) for name in kinds]
    # WEB_CONCURRENCY= is the one exception: gunicorn itself parses WEB_CONCURRENCY with int() when
    # it is imported, before any configuration file runs, and fails with its own traceback.
    runs += [(name, "") for name in ("APP_ENV", "UPSTREAM_MAX_RETRIES", "REDIS_SOCKET_TIMEOUT")]
    assert all(raw is not None for _, raw in runs[: len(kinds)])
    assert all(CASES[name][3] is ERROR for name, _ in runs[len(kinds) :])
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda run: _gunicorn({run[0]: run[1]}), runs))
    for (name, raw), result in zip(runs, results, strict=True):
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (name, raw, result.stderr[-500:])
        assert len(lines) == 1 and re.match(f"^configuration error: {name} ", lines[0]), (name, lines)


def test_readme_lists_every_variable_and_docs_configuration_explains_each() -> None:
    readme = (ROOT / "README.md").read_text()
    listed = readme[readme.index("## Configuration") :]
    listed = listed[: listed.index("\n## ", 1)]
    missing = [name for name in variables() if not re.search(f"`{name}[`=]", listed)]
    assert not missing, f"README's configuration list lacks {missing}"
    table = (ROOT / "docs" / "configuration.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    unexplained = [name for name in variables() if not any(f"`{name}`" in row.split(" | ")[0] for row in rows)]
    assert not unexplained, f"docs/configuration.md's table lacks {unexplained}"


@pytest.mark.parametrize(
    "url",
    ["redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster/2", "redis+cluster://10.0.0.1:7000,10.0.0.2:7000"],
)
def test_sentinel_and_cluster_urls_are_accepted(url: str) -> None:
    assert load_settings({"APP_ENV": "testing", "REDIS_URL": url}).redis_url == url


def test_a_sentinel_url_must_name_its_service() -> None:
    with pytest.raises(ConfigError, match="names its service"):
        load_settings({"APP_ENV": "testing", "REDIS_URL": "redis+sentinel://10.0.0.1:26379"})
