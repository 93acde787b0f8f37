"""The suite's servers get the settings the suite gives them, never the caller's shell's."""

from __future__ import annotations

import pytest

from config.settings import variables
from loadtest._procs import service_env


@pytest.mark.parametrize("name", sorted(variables()))
def test_a_setting_exported_in_the_shell_never_reaches_a_test_server(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, "from-the-shell")
    env = service_env({}, 4321, 2)
    assert env.get(name) != "from-the-shell"
    assert env["PORT"] == "4321" and env["WEB_CONCURRENCY"] == "2" and "PATH" in env


def test_what_a_test_sets_is_what_the_server_gets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_DIR", "/from/the/shell")
    assert service_env({"CACHE_DIR": "/the/test/s"}, 1, 1)["CACHE_DIR"] == "/the/test/s"
