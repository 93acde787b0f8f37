from typing import Optional

from pydantic import Field

from .base_model import BaseModel


class GetCreativeSuggestions(BaseModel):
    get_creative_suggestions: Optional[
        "GetCreativeSuggestionsGetCreativeSuggestions"
    ] = Field(alias="getCreativeSuggestions")


class GetCreativeSuggestionsGetCreativeSuggestions(BaseModel):
    suggestions: list["GetCreativeSuggestionsGetCreativeSuggestionsSuggestions"]
    provider: str
    model: str
    usage: "GetCreativeSuggestionsGetCreativeSuggestionsUsage"


class GetCreativeSuggestionsGetCreativeSuggestionsSuggestions(BaseModel):
    text: str
    explanation: str


class GetCreativeSuggestionsGetCreativeSuggestionsUsage(BaseModel):
    input_tokens: int = Field(alias="inputTokens")
    output_tokens: int = Field(alias="outputTokens")


GetCreativeSuggestions.model_rebuild()
GetCreativeSuggestionsGetCreativeSuggestions.model_rebuild()
