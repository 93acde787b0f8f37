from enum import Enum


class Mode(str, Enum):
    code = "code"
    text = "text"
    learning = "learning"
    video = "video"
    reasoning = "reasoning"
    research = "research"
    socratic = "socratic"
    optimize = "optimize"


class QuestionField(str, Enum):
    specificAspects = "specificAspects"
    backgroundLevel = "backgroundLevel"
    intendedUse = "intendedUse"


class Confidence(str, Enum):
    high = "high"
    medium = "medium"
    low = "low"


class ElementType(str, Enum):
    subject = "subject"
    action = "action"
    location = "location"
    time = "time"
    mood = "mood"
    style = "style"
    event = "event"
