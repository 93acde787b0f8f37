from typing import Optional

from pydantic import Field

from .base_model import BaseModel


class GetEnhancementSuggestions(BaseModel):
    get_enhancement_suggestions: Optional[
        "GetEnhancementSuggestionsGetEnhancementSuggestions"
    ] = Field(alias="getEnhancementSuggestions")


class GetEnhancementSuggestionsGetEnhancementSuggestions(BaseModel):
    suggestions: list["GetEnhancementSuggestionsGetEnhancementSuggestionsSuggestions"]
    is_placeholder: bool = Field(alias="isPlaceholder")
    provider: str
    model: str
    usage: "GetEnhancementSuggestionsGetEnhancementSuggestionsUsage"


class GetEnhancementSuggestionsGetEnhancementSuggestionsSuggestions(BaseModel):
    text: str
    explanation: Optional[str]


class GetEnhancementSuggestionsGetEnhancementSuggestionsUsage(BaseModel):
    input_tokens: int = Field(alias="inputTokens")
    output_tokens: int = Field(alias="outputTokens")


GetEnhancementSuggestions.model_rebuild()
GetEnhancementSuggestionsGetEnhancementSuggestions.model_rebuild()
