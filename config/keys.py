"""API keys with names: API_KEYS (`name:secret` pairs, or bare secrets) and API_KEYS_FILE (TOML,
per key: its SHA-256 digest or its secret, a rate limit, budgets and a cache scope). Parsed by
config.settings like every other variable: an invalid entry stops start-up with one line naming
the variable, the key and the field. Secrets are kept only as digests; names are what logs,
metrics and errors show.

    [keys.alice]
    sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    rate_limit = "120/minute"
    tokens_per_day = 2_000_000
    cost_per_month_usd = 150.0
    cache_scope = "key"
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BUDGETS", "CACHE_SCOPES", "MAX_SECRET", "KeySpec", "digest", "parse_keys", "parse_keys_file", "presentable"]

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
CACHE_SCOPES = ("shared", "key")
# Budget fields: (name, period, what it counts)
BUDGETS = (
    ("tokens_per_day", "day", "tokens"),
    ("tokens_per_month", "month", "tokens"),
    ("cost_per_day_usd", "day", "cost"),
    ("cost_per_month_usd", "month", "cost"),
)
_FIELDS = {"sha256", "secret", "rate_limit", "cache_scope", *(name for name, _, _ in BUDGETS)}


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True)
class KeySpec:
    """One API key: its name, its secret's SHA-256 digest, and what applies to it alone."""

    name: str
    digest: bytes = field(repr=False)
    rate_limit: str | None = None  # overrides RATE_LIMIT
    budgets: tuple[tuple[str, float], ...] = ()  # (budget field, amount) for each one set
    cache_scope: str | None = None  # overrides CACHE_SCOPE

    def budget(self, name: str) -> float | None:
        return dict(self.budgets).get(name)


class KeySpecError(ValueError):
    """An invalid key entry; config.settings turns it into its ConfigError."""


def parse_keys(raw: str) -> tuple[KeySpec, ...]:
    """API_KEYS: comma-separated `name:secret` pairs or bare secrets (named `key-` plus the first
    8 hex digits of their digest). A value that is set must hold at least one key, and every
    entry must be one that a caller could present: anything else stops start-up (a list that
    parsed to no key would leave /api/* open)."""
    specs = []
    for position, part in enumerate(raw.split(","), start=1):
        entry = part.strip()
        if not entry:
            continue
        name, sep, secret = entry.partition(":")
        if sep and NAME.fullmatch(name):
            if not secret.strip():
                raise KeySpecError(f"key {name!r} has an empty secret (write name:secret)")
            specs.append(KeySpec(name, digest(secret.strip())))
            secret = secret.strip()
        else:
            specs.append(KeySpec("key-" + digest(entry).hex()[:8], digest(entry)))
            secret = entry
        if not presentable(secret):
            raise KeySpecError(
                f"entry {position}: a secret is printable ASCII without spaces, at most {MAX_SECRET} characters"
            )
    if not specs:
        raise KeySpecError("holds no key (unset it, or leave it empty, for no keys)")
    return tuple(specs)


MAX_SECRET = 512  # characters: a longer credential is refused before it is compared


def presentable(secret: str) -> bool:
    """Could a caller send `secret` as a key (app.security.auth refuses anything else)?"""
    return (
        0 < len(secret) <= MAX_SECRET
        and secret.isascii()
        and secret.isprintable()
        and "," not in secret
        and not any(c.isspace() for c in secret)
    )


def parse_keys_file(path: str, rate_limit: Any) -> tuple[KeySpec, ...]:
    """API_KEYS_FILE: read and check every key; `rate_limit(where, text)` checks a rate limit."""
    import tomllib

    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise KeySpecError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise KeySpecError(f"{path} is not valid TOML: {exc}") from None
    unknown = set(document) - {"keys"}
    if unknown:
        raise KeySpecError(f"unknown top-level entry {sorted(unknown)[0]!r} (keys go under [keys.<name>])")
    keys = document.get("keys", {})
    if not isinstance(keys, dict) or not keys:
        raise KeySpecError(f"{path} defines no [keys.<name>] table")
    return tuple(_spec(name, entry, rate_limit) for name, entry in keys.items())


def _spec(name: str, entry: Any, rate_limit: Any) -> KeySpec:
    where = f"key {name!r}"
    if not NAME.fullmatch(name):
        raise KeySpecError(f"{where}: a name is 1-64 letters, digits, '_', '.' or '-'")
    if not isinstance(entry, dict):
        raise KeySpecError(f"{where}: must be a table ([keys.{name}])")
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise KeySpecError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(sorted(_FIELDS))})")
    if ("sha256" in entry) == ("secret" in entry):
        raise KeySpecError(f"{where}: set exactly one of sha256 (the secret's SHA-256, hex) or secret")
    if "sha256" in entry:
        text = entry["sha256"]
        if not isinstance(text, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", text):
            raise KeySpecError(f"{where}: sha256 must be 64 hex digits")
        key_digest = bytes.fromhex(text)
    else:
        secret = entry["secret"]
        if not isinstance(secret, str) or not presentable(secret.strip()):
            raise KeySpecError(
                f"{where}: secret must be printable ASCII without spaces or commas, 1-{MAX_SECRET} characters"
            )
        key_digest = digest(secret.strip())
    limit = None
    if "rate_limit" in entry:
        if not isinstance(entry["rate_limit"], str):
            raise KeySpecError(f"{where}: rate_limit must be a string like '60/minute'")
        limit = rate_limit(f"{where}: rate_limit", entry["rate_limit"])
    budgets = []
    for field_name, _, kind in BUDGETS:
        if field_name not in entry:
            continue
        value = entry[field_name]
        valid = isinstance(value, int) if kind == "tokens" else isinstance(value, int | float)
        if isinstance(value, bool) or not valid or value <= 0 or value != value or value == float("inf"):
            what = "a positive integer" if kind == "tokens" else "a positive number"
            raise KeySpecError(f"{where}: {field_name} must be {what} (got {value!r}); leave it out for no budget")
        budgets.append((field_name, float(value)))
    scope = entry.get("cache_scope")
    if scope is not None and scope not in CACHE_SCOPES:
        raise KeySpecError(f"{where}: cache_scope must be shared or key (got {scope!r})")
    return KeySpec(name, key_digest, limit, tuple(budgets), scope)


def check_unique(specs: tuple[KeySpec, ...]) -> None:
    """No two keys with one name or one secret."""
    names: set[str] = set()
    digests: dict[bytes, str] = {}
    for spec in specs:
        if spec.name in names:
            raise KeySpecError(f"key {spec.name!r} is defined twice")
        if spec.digest in digests:
            raise KeySpecError(f"keys {digests[spec.digest]!r} and {spec.name!r} have the same secret")
        names.add(spec.name)
        digests[spec.digest] = spec.name
