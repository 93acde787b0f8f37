from typing import Optional

from pydantic import Field

from .base_model import BaseModel
from .enums import Confidence


class EditorPanel(BaseModel):
    enhance: Optional["EditorPanelEnhance"]
    scene: Optional["EditorPanelScene"]
    ideas: Optional["EditorPanelIdeas"]


class EditorPanelEnhance(BaseModel):
    suggestions: list["EditorPanelEnhanceSuggestions"]


class EditorPanelEnhanceSuggestions(BaseModel):
    text: str


class EditorPanelScene(BaseModel):
    is_scene_change: bool = Field(alias="isSceneChange")
    confidence: Confidence


class EditorPanelIdeas(BaseModel):
    suggestions: list["EditorPanelIdeasSuggestions"]


class EditorPanelIdeasSuggestions(BaseModel):
    text: str


EditorPanel.model_rebuild()
EditorPanelEnhance.model_rebuild()
EditorPanelIdeas.model_rebuild()
