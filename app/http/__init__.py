"""Outbound HTTP: one pooled, kept-alive requests.Session per provider per worker."""

from app.http.session import make_session, post_json

__all__ = ["make_session", "post_json"]
