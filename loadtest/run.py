"""`make loadtest`: the fake upstream at realistic latency, the service, and locust headless.

    python -m loadtest.run [--profile basic|stress] [--scale 1.0] [--latency 2.0] [--video-latency 8.0]

Reports (CSV and HTML) go to reports/loadtest-<profile>*. Exits with locust's code: non-zero when
a threshold was missed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from loadtest._procs import BIN, ROOT, fake_upstream, gunicorn

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=["basic", "stress"], default="basic")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every stage duration")
    parser.add_argument("--latency", type=float, default=2.0, help="fake upstream seconds per answer")
    parser.add_argument("--video-latency", type=float, default=8.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--reports", type=Path, default=ROOT / "reports")
    args = parser.parse_args(argv)

    with fake_upstream(args.latency, args.video_latency) as upstream:
        env = {
            "ANTHROPIC_API_KEY": "sk-ant-loadtest",
            "ANTHROPIC_BASE_URL": upstream,
            "LLM_MODEL": "claude-sonnet-4-5",
            "RATE_LIMIT": "",
            "LOG_LEVEL": "WARNING",
        }
        with gunicorn(env, workers=args.workers) as (url, _proc, _log):
            args.reports.mkdir(exist_ok=True)
            prefix = args.reports / f"loadtest-{args.profile}"
            command = [
                str(BIN / "locust"),
                "-f",
                str(ROOT / "loadtest" / "locustfile.py"),
                "--headless",
                "-H",
                url,
                "--csv",
                str(prefix),
                "--html",
                f"{prefix}.html",
                "--only-summary",
                "--loglevel",
                "WARNING",
            ]
            locust_env = {**os.environ, "LOADTEST_PROFILE": args.profile, "LOADTEST_TIME_SCALE": str(args.scale)}
            code = subprocess.run(command, cwd=ROOT, env=locust_env).returncode
            print(f"reports: {prefix}_stats.csv, {prefix}.html")
            return code


if __name__ == "__main__":
    sys.exit(main())
