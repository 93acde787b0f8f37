from typing import Any, Optional

from pydantic import Field

from .base_model import BaseModel
from .enums import Confidence


class DetectSceneChange(BaseModel):
    detect_scene_change: Optional["DetectSceneChangeDetectSceneChange"] = Field(
        alias="detectSceneChange"
    )


class DetectSceneChangeDetectSceneChange(BaseModel):
    is_scene_change: bool = Field(alias="isSceneChange")
    confidence: Confidence
    reasoning: str
    suggested_updates: Any = Field(alias="suggestedUpdates")
    provider: str
    model: str
    usage: "DetectSceneChangeDetectSceneChangeUsage"


class DetectSceneChangeDetectSceneChangeUsage(BaseModel):
    input_tokens: int = Field(alias="inputTokens")
    output_tokens: int = Field(alias="outputTokens")


DetectSceneChange.model_rebuild()
DetectSceneChangeDetectSceneChange.model_rebuild()
