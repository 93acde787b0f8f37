from typing import Any, Optional

from pydantic import Field

from .base_model import BaseModel
from .enums import ElementType, Mode


class OptimizeInput(BaseModel):
    prompt: str
    "1 to 10000 characters, not blank"
    mode: Mode
    context: Optional["OptimizeContextInput"] = None


class OptimizeContextInput(BaseModel):
    specific_aspects: Optional[str] = Field(alias="specificAspects", default=None)
    "0 to 5000 characters"
    background_level: Optional[str] = Field(alias="backgroundLevel", default=None)
    "0 to 1000 characters"
    intended_use: Optional[str] = Field(alias="intendedUse", default=None)
    "0 to 1000 characters"


class QuestionsInput(BaseModel):
    prompt: str
    "1 to 10000 characters, not blank"


class EnhancementInput(BaseModel):
    highlighted_text: str = Field(alias="highlightedText")
    "1 to 10000 characters, not blank"
    context_before: Optional[str] = Field(alias="contextBefore", default=None)
    "0 to 5000 characters"
    context_after: Optional[str] = Field(alias="contextAfter", default=None)
    "0 to 5000 characters"
    full_prompt: str = Field(alias="fullPrompt")
    "1 to 50000 characters, not blank"
    original_user_prompt: Optional[str] = Field(
        alias="originalUserPrompt", default=None
    )
    "0 to 10000 characters"


class CustomSuggestionsInput(BaseModel):
    highlighted_text: str = Field(alias="highlightedText")
    "1 to 10000 characters, not blank"
    custom_request: str = Field(alias="customRequest")
    "1 to 1000 characters, not blank"
    full_prompt: str = Field(alias="fullPrompt")
    "1 to 50000 characters, not blank"


class SceneChangeInput(BaseModel):
    changed_field: str = Field(alias="changedField")
    "1 to 200 characters, not blank"
    new_value: str = Field(alias="newValue")
    "1 to 10000 characters, not blank"
    old_value: Optional[str] = Field(alias="oldValue", default=None)
    "0 to 10000 characters"
    full_prompt: str = Field(alias="fullPrompt")
    "1 to 50000 characters, not blank"
    affected_fields: Optional[Any] = Field(alias="affectedFields", default=None)
    "any JSON object, nested at most 16 levels"


class CreativeInput(BaseModel):
    element_type: ElementType = Field(alias="elementType")
    current_value: Optional[str] = Field(alias="currentValue", default=None)
    "0 to 5000 characters"
    context: Optional[str] = None
    "0 to 5000 characters"
    concept: Optional[str] = None
    "0 to 10000 characters"


OptimizeInput.model_rebuild()
