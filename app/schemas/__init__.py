"""Pydantic models: the request bodies we accept (`requests`), the answers we return and the
shapes models must give (`answers`)."""

from app.schemas.answers import *  # noqa: F403
from app.schemas.answers import __all__ as _answers
from app.schemas.requests import *  # noqa: F403
from app.schemas.requests import __all__ as _requests

__all__ = [*_requests, *_answers]
