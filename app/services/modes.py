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
    # What the offline template writes under each section ("{prompt}" is the user's prompt),
    # and which section the user's context is added to.
    drafts: tuple[str, ...] = ()
    context_at: int = 1
    max_tokens: int = 4096
    timeout: float = 30.0
    ttl: int | None = None  # None: CACHE_DEFAULT_TTL (3600 s unless configured)

    def __post_init__(self) -> None:
        if len(self.drafts) != len(self.sections):
            raise ValueError(f"mode {self.name}: one draft per section")

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
    drafts=(
        "{prompt}",
        "Assume a capable reader who has not seen this request before.",
        "Cover every part of the goal above. Keep each constraint it states, and make the implicit "
        "ones explicit before relying on them.",
        "1. Restate the task in one sentence.\n2. Work through it in order, stating assumptions as you "
        "make them.\n3. Check the result against the success criteria before answering.",
        "The answer addresses the whole goal, is accurate, and each requirement above can be checked off.",
        "Headings and short paragraphs or lists, whichever reads best.",
        "Include one short, concrete example of what a good answer looks like.",
        "Invented facts, unstated assumptions, vague adjectives and padding.",
    ),
)


def _general(name: str, focus: str, output_format: str) -> Mode:
    drafts = list(_GENERAL.drafts)
    drafts[_GENERAL.sections.index("Output format")] = output_format
    return Mode(
        name=name,
        role=f"You are an expert prompt engineer specialising in {focus}.",
        sections=_GENERAL.sections,
        guidance=_GENERAL.guidance,
        drafts=tuple(drafts),
    )


MODE_REGISTRY: Mapping[str, Mode] = {
    "optimize": _GENERAL,
    "code": _general(
        "code",
        "software engineering tasks",
        "Code in fenced blocks with the language named, then a short explanation of the design choices "
        "and how to run or test it.",
    ),
    "text": _general(
        "text",
        "writing and editing tasks",
        "Well-structured prose in the requested tone; headings only where they help.",
    ),
    "learning": _general(
        "learning",
        "teaching and explanation",
        "An explanation in plain words, then a worked example, then three practice questions with answers.",
    ),
    "reasoning": Mode(
        name="reasoning",
        role="You write lean prompts for reasoning models, which think on their own.",
        sections=("Task", "Key constraints", "Success criteria", "Reasoning guidance (optional)"),
        guidance=(
            "Be brief and direct. Do not over-structure, do not dictate a chain of thought, do "
            "not add role-play. State what a correct answer must satisfy."
        ),
        drafts=(
            "{prompt}",
            "Respect every constraint stated in the task; add none of your own.",
            "A correct and complete answer, with the final result stated plainly at the end.",
            "Think it through before answering and check the edge cases; show the conclusion and only "
            "the steps that justify it.",
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
        drafts=(
            "{prompt}",
            "1. What is already established, and by whom?\n2. Which questions remain open or contested?\n"
            "3. What evidence would settle them?\n4. Which methods and sources are most reliable here?\n"
            "5. What are the practical implications and for whom?",
            "Start from a review of the literature and primary sources; rate the strength of each "
            "piece of evidence before using it.",
            "Prefer peer-reviewed and primary sources; cite every claim; flag conflicts of interest and "
            "anything older than five years.",
            "Every key question answered with cited evidence, and every remaining gap stated.",
            "Group findings by question, contrast agreeing and conflicting evidence, and give a "
            "confidence level for each conclusion.",
            "A structured report: summary, findings per question, open questions, references.",
            "Biased or outdated sources and overgeneralisation: triangulate sources and state the limits "
            "of each conclusion.",
        ),
        context_at=0,
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
        drafts=(
            "{prompt}",
            "Before teaching anything, ask what the learner already knows and where their understanding stops.",
            "Ask two or three questions about the basic ideas the topic rests on; wait for each answer.",
            "Ask why and how questions that connect those basics to the harder parts of the topic.",
            "Pose a realistic problem the learner solves with what they have worked out.",
            "Ask the learner to say in their own words what changed in their understanding.",
            "Probe the usual mistakes with questions that let the learner discover them.",
            "Suggest one or two directions to explore next, phrased as questions.",
        ),
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
        drafts=(
            "{prompt}",
            "Name the shot size, lens and movement, for example a slow dolly-in on a 35 mm lens.",
            "Give the key light's direction, quality and colour temperature, and the time of day it implies.",
            "Three to five dominant colours and the grade, for example warm highlights and muted shadows.",
            "One continuous present-tense description of what the camera sees: subject, action, "
            "setting, light and motion, from the first frame to the last.",
            "5-10 seconds, 16:9, 24 fps, shallow depth of field.",
            "1. A wider, calmer framing.\n2. A closer, more intimate framing.\n3. A stylised version with "
            "a different palette.",
            "Sora: full sentences with physical detail. Veo: name the camera move. Runway: one shot, one action.",
        ),
        context_at=0,
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
