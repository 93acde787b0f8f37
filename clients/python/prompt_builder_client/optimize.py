from typing import Optional

from pydantic import Field

from .base_model import BaseModel
from .enums import Mode


class Optimize(BaseModel):
    optimize: Optional["OptimizeOptimize"]


class OptimizeOptimize(BaseModel):
    optimized_prompt: str = Field(alias="optimizedPrompt")
    mode: Mode
    provider: str
    model: str
    usage: "OptimizeOptimizeUsage"


class OptimizeOptimizeUsage(BaseModel):
    input_tokens: int = Field(alias="inputTokens")
    output_tokens: int = Field(alias="outputTokens")


Optimize.model_rebuild()
OptimizeOptimize.model_rebuild()
