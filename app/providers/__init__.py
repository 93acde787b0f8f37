"""Model APIs behind one small interface: anthropic, openai-compatible, and the offline template."""

from app.providers.base import LLMRequest, Provider, ProviderResult, UpstreamFailure

__all__ = ["LLMRequest", "Provider", "ProviderResult", "UpstreamFailure"]
