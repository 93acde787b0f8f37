from typing import Any

from .base_client import BaseClient
from .detect_scene_change import DetectSceneChange
from .editor_panel import EditorPanel
from .generate_questions import GenerateQuestions
from .get_creative_suggestions import GetCreativeSuggestions
from .get_custom_suggestions import GetCustomSuggestions
from .get_enhancement_suggestions import GetEnhancementSuggestions
from .input_types import (
    CreativeInput,
    CustomSuggestionsInput,
    EnhancementInput,
    OptimizeInput,
    QuestionsInput,
    SceneChangeInput,
)
from .optimize import Optimize


def gql(q: str) -> str:
    return q


class PromptBuilderClient(BaseClient):
    def optimize(self, input: OptimizeInput, **kwargs: Any) -> Optimize:
        query = gql("""
            query Optimize($input: OptimizeInput!) {
              optimize(input: $input) {
                optimizedPrompt
                mode
                provider
                model
                usage {
                  inputTokens
                  outputTokens
                }
              }
            }
            """)
        variables: dict[str, object] = {"input": input}
        response = self.execute(
            query=query, operation_name="Optimize", variables=variables, **kwargs
        )
        data = self.get_data(response)
        return Optimize.model_validate(data)

    def generate_questions(
        self, input: QuestionsInput, **kwargs: Any
    ) -> GenerateQuestions:
        query = gql("""
            query GenerateQuestions($input: QuestionsInput!) {
              generateQuestions(input: $input) {
                questions {
                  id
                  title
                  description
                  field
                  examples
                }
                provider
                model
                usage {
                  inputTokens
                  outputTokens
                }
              }
            }
            """)
        variables: dict[str, object] = {"input": input}
        response = self.execute(
            query=query,
            operation_name="GenerateQuestions",
            variables=variables,
            **kwargs,
        )
        data = self.get_data(response)
        return GenerateQuestions.model_validate(data)

    def get_enhancement_suggestions(
        self, input: EnhancementInput, **kwargs: Any
    ) -> GetEnhancementSuggestions:
        query = gql("""
            query GetEnhancementSuggestions($input: EnhancementInput!) {
              getEnhancementSuggestions(input: $input) {
                suggestions {
                  text
                  explanation
                }
                isPlaceholder
                provider
                model
                usage {
                  inputTokens
                  outputTokens
                }
              }
            }
            """)
        variables: dict[str, object] = {"input": input}
        response = self.execute(
            query=query,
            operation_name="GetEnhancementSuggestions",
            variables=variables,
            **kwargs,
        )
        data = self.get_data(response)
        return GetEnhancementSuggestions.model_validate(data)

    def get_custom_suggestions(
        self, input: CustomSuggestionsInput, **kwargs: Any
    ) -> GetCustomSuggestions:
        query = gql("""
            query GetCustomSuggestions($input: CustomSuggestionsInput!) {
              getCustomSuggestions(input: $input) {
                suggestions {
                  text
                }
                provider
                model
                usage {
                  inputTokens
                  outputTokens
                }
              }
            }
            """)
        variables: dict[str, object] = {"input": input}
        response = self.execute(
            query=query,
            operation_name="GetCustomSuggestions",
            variables=variables,
            **kwargs,
        )
        data = self.get_data(response)
        return GetCustomSuggestions.model_validate(data)

    def detect_scene_change(
        self, input: SceneChangeInput, **kwargs: Any
    ) -> DetectSceneChange:
        query = gql("""
            query DetectSceneChange($input: SceneChangeInput!) {
              detectSceneChange(input: $input) {
                isSceneChange
                confidence
                reasoning
                suggestedUpdates
                provider
                model
                usage {
                  inputTokens
                  outputTokens
                }
              }
            }
            """)
        variables: dict[str, object] = {"input": input}
        response = self.execute(
            query=query,
            operation_name="DetectSceneChange",
            variables=variables,
            **kwargs,
        )
        data = self.get_data(response)
        return DetectSceneChange.model_validate(data)

    def get_creative_suggestions(
        self, input: CreativeInput, **kwargs: Any
    ) -> GetCreativeSuggestions:
        query = gql("""
            query GetCreativeSuggestions($input: CreativeInput!) {
              getCreativeSuggestions(input: $input) {
                suggestions {
                  text
                  explanation
                }
                provider
                model
                usage {
                  inputTokens
                  outputTokens
                }
              }
            }
            """)
        variables: dict[str, object] = {"input": input}
        response = self.execute(
            query=query,
            operation_name="GetCreativeSuggestions",
            variables=variables,
            **kwargs,
        )
        data = self.get_data(response)
        return GetCreativeSuggestions.model_validate(data)

    def editor_panel(
        self,
        highlight: EnhancementInput,
        scene: SceneChangeInput,
        subject: CreativeInput,
        **kwargs: Any,
    ) -> EditorPanel:
        query = gql("""
            query EditorPanel($highlight: EnhancementInput!, $scene: SceneChangeInput!, $subject: CreativeInput!) {
              enhance: getEnhancementSuggestions(input: $highlight) {
                suggestions {
                  text
                }
              }
              scene: detectSceneChange(input: $scene) {
                isSceneChange
                confidence
              }
              ideas: getCreativeSuggestions(input: $subject) {
                suggestions {
                  text
                }
              }
            }
            """)
        variables: dict[str, object] = {
            "highlight": highlight,
            "scene": scene,
            "subject": subject,
        }
        response = self.execute(
            query=query, operation_name="EditorPanel", variables=variables, **kwargs
        )
        data = self.get_data(response)
        return EditorPanel.model_validate(data)
