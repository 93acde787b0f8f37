"""Services: the mode registry, endpoint prompts, and PromptService that ties them to the gateway."""

from app.services.prompts import CachePolicy, PromptService

__all__ = ["CachePolicy", "PromptService"]
