"""Who may call and how often: API keys, rate limits, proxy trust, CORS and security headers."""

from app.security import auth, headers, limits

__all__ = ["auth", "headers", "limits"]
