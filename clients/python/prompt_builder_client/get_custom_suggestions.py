from typing import Optional

from pydantic import Field

from .base_model import BaseModel


class GetCustomSuggestions(BaseModel):
    get_custom_suggestions: Optional["GetCustomSuggestionsGetCustomSuggestions"] = (
        Field(alias="getCustomSuggestions")
    )


class GetCustomSuggestionsGetCustomSuggestions(BaseModel):
    suggestions: list["GetCustomSuggestionsGetCustomSuggestionsSuggestions"]
    provider: str
    model: str
    usage: "GetCustomSuggestionsGetCustomSuggestionsUsage"


class GetCustomSuggestionsGetCustomSuggestionsSuggestions(BaseModel):
    text: str


class GetCustomSuggestionsGetCustomSuggestionsUsage(BaseModel):
    input_tokens: int = Field(alias="inputTokens")
    output_tokens: int = Field(alias="outputTokens")


GetCustomSuggestions.model_rebuild()
GetCustomSuggestionsGetCustomSuggestions.model_rebuild()
