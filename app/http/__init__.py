"""Outbound HTTP: one pooled, kept-alive requests.Session per provider per worker."""

from app.http.failure import RETRYABLE_STATUSES, UpstreamFailure
from app.http.session import make_session, post_json, post_stream

__all__ = ["RETRYABLE_STATUSES", "UpstreamFailure", "make_session", "post_json", "post_stream"]
