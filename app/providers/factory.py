"""Build the configured provider with its own pooled session."""

from __future__ import annotations

from app.http import make_session
from app.providers.anthropic import AnthropicProvider
from app.providers.base import Provider
from app.providers.openai import OpenAIProvider
from app.providers.template import TemplateProvider
from config.settings import Settings

__all__ = ["make_provider"]


def make_provider(settings: Settings) -> Provider:
    """Build the configured provider (call after gevent patching: the session pools sockets)."""
    if settings.llm_provider == "template":
        return TemplateProvider(settings.llm_model)
    session = make_session(settings.upstream_pool_size, "prompt-builder-api/1.0", settings.upstream_keepalive)
    cls = AnthropicProvider if settings.llm_provider == "anthropic" else OpenAIProvider
    return cls(
        session,
        base_url=settings.base_url,
        api_key=settings.api_key,
        model=settings.llm_model,
        connect_timeout=settings.upstream_connect_timeout,
    )
