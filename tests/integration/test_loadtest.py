"""A short smoke run of the locust load test: the service under the basic profile meets its
thresholds, writes its reports, and a missed threshold makes the run fail."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _run(tmp_path: Path, scale: str = "0.05", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest.run",
            "--profile",
            "basic",
            "--scale",
            scale,
            "--latency",
            "0.2",
            "--video-latency",
            "0.5",
            "--workers",
            "2",
            "--reports",
            str(tmp_path),
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_basic_profile_smoke(tmp_path: Path) -> None:
    result = _run(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "all thresholds met" in result.stdout
    with (tmp_path / "loadtest-basic_stats.csv").open() as stats:
        rows = {row["Name"]: row for row in csv.DictReader(stats)}
    assert int(rows["Aggregated"]["Request Count"]) > 50
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert (tmp_path / "loadtest-basic.html").stat().st_size > 1000
    print("\n" + result.stdout[result.stdout.index("== basic") :][:600])
