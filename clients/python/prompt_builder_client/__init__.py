from .base_client import BaseClient
from .base_model import BaseModel, Upload
from .client import PromptBuilderClient
from .detect_scene_change import (
    DetectSceneChange,
    DetectSceneChangeDetectSceneChange,
    DetectSceneChangeDetectSceneChangeUsage,
)
from .editor_panel import (
    EditorPanel,
    EditorPanelEnhance,
    EditorPanelEnhanceSuggestions,
    EditorPanelIdeas,
    EditorPanelIdeasSuggestions,
    EditorPanelScene,
)
from .enums import Confidence, ElementType, Mode, QuestionField
from .exceptions import (
    GraphQLClientError,
    GraphQLClientGraphQLError,
    GraphQLClientGraphQLMultiError,
    GraphQLClientHttpError,
    GraphQLClientInvalidResponseError,
)
from .generate_questions import (
    GenerateQuestions,
    GenerateQuestionsGenerateQuestions,
    GenerateQuestionsGenerateQuestionsQuestions,
    GenerateQuestionsGenerateQuestionsUsage,
)
from .get_creative_suggestions import (
    GetCreativeSuggestions,
    GetCreativeSuggestionsGetCreativeSuggestions,
    GetCreativeSuggestionsGetCreativeSuggestionsSuggestions,
    GetCreativeSuggestionsGetCreativeSuggestionsUsage,
)
from .get_custom_suggestions import (
    GetCustomSuggestions,
    GetCustomSuggestionsGetCustomSuggestions,
    GetCustomSuggestionsGetCustomSuggestionsSuggestions,
    GetCustomSuggestionsGetCustomSuggestionsUsage,
)
from .get_enhancement_suggestions import (
    GetEnhancementSuggestions,
    GetEnhancementSuggestionsGetEnhancementSuggestions,
    GetEnhancementSuggestionsGetEnhancementSuggestionsSuggestions,
    GetEnhancementSuggestionsGetEnhancementSuggestionsUsage,
)
from .input_types import (
    CreativeInput,
    CustomSuggestionsInput,
    EnhancementInput,
    OptimizeContextInput,
    OptimizeInput,
    QuestionsInput,
    SceneChangeInput,
)
from .optimize import Optimize, OptimizeOptimize, OptimizeOptimizeUsage

__all__ = [
    "BaseClient",
    "BaseModel",
    "Confidence",
    "CreativeInput",
    "CustomSuggestionsInput",
    "DetectSceneChange",
    "DetectSceneChangeDetectSceneChange",
    "DetectSceneChangeDetectSceneChangeUsage",
    "EditorPanel",
    "EditorPanelEnhance",
    "EditorPanelEnhanceSuggestions",
    "EditorPanelIdeas",
    "EditorPanelIdeasSuggestions",
    "EditorPanelScene",
    "ElementType",
    "EnhancementInput",
    "GenerateQuestions",
    "GenerateQuestionsGenerateQuestions",
    "GenerateQuestionsGenerateQuestionsQuestions",
    "GenerateQuestionsGenerateQuestionsUsage",
    "GetCreativeSuggestions",
    "GetCreativeSuggestionsGetCreativeSuggestions",
    "GetCreativeSuggestionsGetCreativeSuggestionsSuggestions",
    "GetCreativeSuggestionsGetCreativeSuggestionsUsage",
    "GetCustomSuggestions",
    "GetCustomSuggestionsGetCustomSuggestions",
    "GetCustomSuggestionsGetCustomSuggestionsSuggestions",
    "GetCustomSuggestionsGetCustomSuggestionsUsage",
    "GetEnhancementSuggestions",
    "GetEnhancementSuggestionsGetEnhancementSuggestions",
    "GetEnhancementSuggestionsGetEnhancementSuggestionsSuggestions",
    "GetEnhancementSuggestionsGetEnhancementSuggestionsUsage",
    "GraphQLClientError",
    "GraphQLClientGraphQLError",
    "GraphQLClientGraphQLMultiError",
    "GraphQLClientHttpError",
    "GraphQLClientInvalidResponseError",
    "Mode",
    "Optimize",
    "OptimizeContextInput",
    "OptimizeInput",
    "OptimizeOptimize",
    "OptimizeOptimizeUsage",
    "PromptBuilderClient",
    "QuestionField",
    "QuestionsInput",
    "SceneChangeInput",
    "Upload",
]
