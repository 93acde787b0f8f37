"""`make cluster` refuses ports in use with the make variables that change them, and does not
default to `make run`'s port."""

from __future__ import annotations

import re
import socket

import pytest

from loadtest import cluster


def test_a_port_in_use_names_the_make_variables() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit) as info:
            cluster.main(["--port", str(port), "--first-port", str(port + 1), "--instances", "1"])
    message = str(info.value)
    # Named among the ports in use (another process on the machine may hold port + 1 as well).
    assert re.search(rf"port\(s\) (\d+, )*{port}(, \d+)* already in use", message), message
    assert "CLUSTER_PORT=" in message and "FIRST_PORT=" in message


def test_the_first_instance_does_not_default_to_make_runs_port() -> None:
    makefile = (cluster.ROOT / "Makefile").read_text()
    run_port = 3001  # config/settings.py's PORT default, where `make run` serves
    assert f"FIRST_PORT:-{run_port}" not in makefile and "FIRST_PORT:-3101" in makefile
