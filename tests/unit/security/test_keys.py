"""Named keys: API_KEYS pairs, the keys file and its every way to be wrong (one line naming the
key and the field, at start), and hostile credentials (401 in the usual shape, never a 500)."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.keys import KeySpec, digest
from config.settings import ConfigError, load_settings
from tests.support import make_app

OPTIMIZE = {"prompt": "x", "mode": "code"}


def _file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "keys.toml"
    path.write_text(text)
    return str(path)


def test_pairs_and_bare_secrets() -> None:
    settings = load_settings({"API_KEYS": "alice:a-secret, b@b:secret ,lonely, carol:c:3"})
    names = [spec.name for spec in settings.keys]
    assert names == ["alice", "key-" + digest("b@b:secret").hex()[:8], "key-" + digest("lonely").hex()[:8], "carol"]
    assert settings.keys[3] == KeySpec("carol", digest("c:3"))  # the secret is what follows the first colon
    assert settings.keys[0] == KeySpec("alice", digest("a-secret"))
    assert settings.cache_scope == "key"  # more than one key: kept apart by default
    assert load_settings({"API_KEYS": "only:one"}).cache_scope == "shared"
    assert load_settings({"API_KEYS": "a:1,b:2", "CACHE_SCOPE": "shared"}).cache_scope == "shared"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[keys.a]\nsecret = 'x'\n[keys.a]\nsecret = 'y'\n", "is not valid TOML"),  # a name twice
        ("[keys.a]\nsecret = 'x'\n[keys.b]\nsecret = 'x'\n", "keys 'a' and 'b' have the same secret"),
        ("[keys.a]\nsecret = 'x'\ntokens_per_day = 0\n", "key 'a': tokens_per_day must be a positive integer (got 0)"),
        ("[keys.a]\nsecret = 'x'\ncost_per_month_usd = -5\n", "key 'a': cost_per_month_usd must be a positive number"),
        ("[keys.a]\nsecret = 'x'\ntokens_per_month = 1.5\n", "key 'a': tokens_per_month must be a positive integer"),
        ("[keys.a]\nsecret = 'x'\ntokens_per_day = true\n", "key 'a': tokens_per_day must be a positive integer"),
        ("[keys.a]\nsecret = 'x'\ncolour = 'blue'\n", "key 'a': unknown field 'colour'"),
        ("[keys.a]\nrate_limit = '1/second'\n", "key 'a': set exactly one of sha256"),
        ("[keys.a]\nsecret = 'x'\nsha256 = 'ab'\n", "key 'a': set exactly one of sha256"),
        ("[keys.a]\nsha256 = 'not hex'\n", "key 'a': sha256 must be 64 hex digits"),
        ("[keys.a]\nsecret = 'x'\nrate_limit = 'lots'\n", "API_KEYS_FILE key 'a': rate_limit must look like"),
        ("[keys.a]\nsecret = 'x'\ncache_scope = 'tenant'\n", "key 'a': cache_scope must be shared or key"),
        ("[keys.'a b']\nsecret = 'x'\n", "key 'a b': a name is 1-64 letters"),
        ("[users.a]\nsecret = 'x'\n", "unknown top-level entry 'users'"),
        ("title = 'keys'\n", "unknown top-level entry 'title'"),
        ("", "defines no [keys.<name>] table"),
    ],
)
def test_a_bad_keys_file_stops_start_up_naming_the_key_and_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"API_KEYS_FILE": _file(tmp_path, text)})
    line = str(info.value)
    assert message in line and "\n" not in line and line.startswith(("API_KEYS_FILE ", "API_KEYS ")), line
    assert "'x'" not in line.replace("secret = 'x'", "")  # never a secret in the message


def test_a_name_in_both_places_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, "[keys.alice]\nsecret = 'other'\n")
    with pytest.raises(ConfigError, match="key 'alice' is defined twice"):
        load_settings({"API_KEYS": "alice:one", "API_KEYS_FILE": path})


@pytest.fixture(scope="module")
def locked() -> object:
    return make_app({"API_KEYS": "alice:alpha-secret,bob:beta-secret", "LOG_LEVEL": "INFO"})


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": "alpha-secret, beta-secret"},  # two X-API-Key headers, as a server joins them
        {"Authorization": "Bearer alpha-secret, Bearer beta-secret"},  # two Authorization headers
        {"X-API-Key": "alpha secret"},
        {"X-API-Key": "alpha\tsecret"},
        {"X-API-Key": "alpha-sécret"},
        {"X-API-Key": "k" * 10_000},
    ],
    ids=["two-x-api-keys", "two-authorizations", "space", "tab", "non-ascii", "very-long"],
)
def test_hostile_credentials_get_401(locked: object, headers: dict[str, str]) -> None:
    response = locked.test_client().post("/api/optimize", json=OPTIMIZE, headers=headers)  # type: ignore[attr-defined]
    body = response.get_json()
    assert response.status_code == 401 and set(body) == {"error", "details", "requestId"}
    assert "secret" not in body["details"] and body["error"] == "API key malformed"


def test_the_access_line_names_the_key_not_its_secret(locked: object) -> None:
    import io
    import json

    from app.parts import parts_of

    stream = parts_of(locked).access.stream = io.StringIO()  # type: ignore[arg-type]
    response = locked.test_client().post("/api/optimize", json=OPTIMIZE, headers={"X-API-Key": "beta-secret"})  # type: ignore[attr-defined]
    assert response.status_code == 200
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["key"] for line in lines] == ["bob"]
    assert "beta-secret" not in stream.getvalue()
