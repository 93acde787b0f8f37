"""Settings: defaults per environment, provider choice, and one-line errors naming the variable."""

import pytest

from config.settings import ConfigError, load_settings


def test_defaults_pick_the_offline_template_without_a_key() -> None:
    settings = load_settings({})
    assert settings.llm_provider == "template"
    assert settings.port == 3001
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.worker_connections == 1000
    assert settings.upstream_pool_size == 1000
    assert settings.cache_max_bytes == 500 * 1024 * 1024


def test_anthropic_is_the_default_when_its_key_is_set() -> None:
    settings = load_settings({"ANTHROPIC_API_KEY": "sk-test"})
    assert settings.llm_provider == "anthropic"
    assert settings.llm_model.startswith("claude")
    assert settings.base_url == "https://api.anthropic.com"


def test_openai_compatible_server() -> None:
    settings = load_settings(
        {"LLM_PROVIDER": "openai", "OPENAI_BASE_URL": "http://localhost:11434/v1/", "LLM_MODEL": "llama3.1"}
    )
    assert (settings.llm_provider, settings.base_url, settings.llm_model) == (
        "openai",
        "http://localhost:11434/v1",
        "llama3.1",
    )


def test_environment_classes_change_defaults() -> None:
    assert load_settings({"APP_ENV": "development"}).log_level == "DEBUG"
    assert load_settings({"APP_ENV": "testing"}).web_concurrency == 1
    assert load_settings({"APP_ENV": "testing", "LOG_LEVEL": "error"}).log_level == "ERROR"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"APP_ENV": "staging"}, "APP_ENV"),
        ({"PORT": "http"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY"),
        ({"LLM_PROVIDER": "gemini"}, "LLM_PROVIDER"),
        ({"LLM_PROVIDER": "anthropic"}, "ANTHROPIC_API_KEY"),
        ({"ANTHROPIC_BASE_URL": "ftp://x"}, "ANTHROPIC_BASE_URL"),
        ({"MAX_BODY_BYTES": "-1"}, "MAX_BODY_BYTES"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"UPSTREAM_POOL_SIZE": "many"}, "UPSTREAM_POOL_SIZE"),
        ({"CACHE_ENABLED": "maybe"}, "CACHE_ENABLED"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({"BREAKER_RESET_TIMEOUT": "nan"}, "BREAKER_RESET_TIMEOUT"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    message = str(info.value)
    assert message.startswith(variable)
    assert "\n" not in message
