from typing import Optional

from pydantic import Field

from .base_model import BaseModel
from .enums import QuestionField


class GenerateQuestions(BaseModel):
    generate_questions: Optional["GenerateQuestionsGenerateQuestions"] = Field(
        alias="generateQuestions"
    )


class GenerateQuestionsGenerateQuestions(BaseModel):
    questions: list["GenerateQuestionsGenerateQuestionsQuestions"]
    provider: str
    model: str
    usage: "GenerateQuestionsGenerateQuestionsUsage"


class GenerateQuestionsGenerateQuestionsQuestions(BaseModel):
    id: str
    title: str
    description: str
    field: QuestionField
    examples: list[str]


class GenerateQuestionsGenerateQuestionsUsage(BaseModel):
    input_tokens: int = Field(alias="inputTokens")
    output_tokens: int = Field(alias="outputTokens")


GenerateQuestions.model_rebuild()
GenerateQuestionsGenerateQuestions.model_rebuild()
