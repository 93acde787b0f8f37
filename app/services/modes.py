"""The mode registry: per mode, the system prompt, the sections it asks for, and its limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

__all__ = ["MODE_REGISTRY", "Mode", "context_appendix"]

_OUTPUT_RULE = (
    "Output only the improved prompt itself: no preamble, no commentary about what you changed, "
    "no closing remarks. Write it so it can be pasted straight into a model."
)


@dataclass(frozen=True)
class Mode:
    """How one optimization mode asks the model to rewrite a prompt."""

    name: str
    role: str
    sections: tuple[str, ...]
    guidance: str
    max_tokens: int = 4096
    timeout: float = 30.0
    ttl: int | None = None  # None: CACHE_DEFAULT_TTL (3600 s unless configured)

    @cached_property
    def system(self) -> str:
        """Return the system prompt sent upstream for this mode."""
        numbered = "\n".join(f"{i}. {title}" for i, title in enumerate(self.sections, 1))
        return (
            f"{self.role}\n\n"
            f"Rewrite the user's rough prompt (given in the user message) into an optimized "
            f"prompt with these parts, in this order:\n{numbered}\n\n"
            f"{self.guidance}\n\n{_OUTPUT_RULE}"
        )


_GENERAL = Mode(
    name="optimize",
    role="You are an expert prompt engineer.",
    sections=(
        "Goal",
        "Context",
        "Requirements",
        "Step-by-step instructions",
        "Success criteria",
        "Output format",
        "Examples",
        "What to avoid",
    ),
    guidance=(
        "Keep every fact and intent the user gave; make implicit expectations explicit; prefer "
        "concrete, checkable requirements over adjectives. Invent no facts about the user."
    ),
)


def _general(name: str, focus: str) -> Mode:
    return Mode(
        name=name,
        role=f"You are an expert prompt engineer specialising in {focus}.",
        sections=_GENERAL.sections,
        guidance=_GENERAL.guidance,
    )


MODE_REGISTRY: Mapping[str, Mode] = {
    "optimize": _GENERAL,
    "code": _general("code", "software engineering tasks"),
    "text": _general("text", "writing and editing tasks"),
    "learning": _general("learning", "teaching and explanation"),
    "reasoning": Mode(
        name="reasoning",
        role="You write lean prompts for reasoning models, which think on their own.",
        sections=("Task", "Key constraints", "Success criteria", "Reasoning guidance (optional)"),
        guidance=(
            "Be brief and direct. Do not over-structure, do not dictate a chain of thought, do "
            "not add role-play. State what a correct answer must satisfy."
        ),
    ),
    "research": Mode(
        name="research",
        role="You are a research director who turns questions into research plans.",
        sections=(
            "Research objective",
            "Key questions (5-7, in priority order)",
            "Methodology",
            "Sources and quality criteria",
            "Success metrics",
            "Synthesis framework",
            "Deliverable format",
            "Risks and mitigations",
        ),
        guidance="Make every question answerable and every source criterion testable.",
    ),
    "socratic": Mode(
        name="socratic",
        role="You are a teacher who guides learners by questions rather than answers.",
        sections=(
            "Learning objective",
            "Prior-knowledge check",
            "Foundation questions",
            "Deepening questions",
            "Application questions",
            "Reflection",
            "Common misconceptions",
            "Extensions",
        ),
        guidance="Each stage builds on the previous one; questions lead, they never lecture.",
    ),
    "video": Mode(
        name="video",
        role="You are a cinematographer writing prompts for text-to-video models.",
        sections=(
            "Subject, action, setting, time and mood",
            "Camera and movement",
            "Lighting",
            "Colour palette",
            "Main prompt (150-300 words)",
            "Technical parameters",
            "Three alternative versions",
            "Platform tips (Sora, Veo, Runway)",
        ),
        guidance="Describe only what a camera can see; be specific about motion and light.",
        timeout=90.0,
    ),
}


_CONTEXT_LABELS = (
    ("specificAspects", "Focus areas", "Give these aspects particular attention"),
    ("backgroundLevel", "Audience level", "Pitch the depth and vocabulary at this level"),
    ("intendedUse", "Intended use", "Shape the prompt for this use"),
)


def context_appendix(context: Mapping[str, str | None] | None) -> str:
    """Return the instructions that the optional context fields add (empty when none is set)."""
    if not context:
        return ""
    lines = [
        f"- {label}: {context[key].strip()} ({hint}.)"  # type: ignore[union-attr]
        for key, label, hint in _CONTEXT_LABELS
        if context.get(key) and context[key].strip()  # type: ignore[union-attr]
    ]
    return "\n\nAdditional context from the user:\n" + "\n".join(lines) if lines else ""
