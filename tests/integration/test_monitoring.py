"""Monitoring that works on real data: promtool and amtool on the repo's files, then a real
Prometheus with the repo's rules scraping a live server under traffic, queried for every
dashboard panel expression and every recording rule. "No data" fails."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from loadtest._procs import EDGE_LOG, mtail, nginx
from tests.support import (
    ROOT,
    FakeUpstreamProcess,
    Server,
    free_port,
    held_burst,
    need_binary,
    redis_env,
    redis_server,
    start_server,
    stop,
    wait_http,
    wait_until,
)

pytestmark = pytest.mark.integration

PROM = ROOT / "prometheus"
DASHBOARD = ROOT / "grafana" / "dashboards" / "prompt-builder-api.json"
RULE_FILES = ("recording.yml", "alerts.yml", "anomaly.yml")


def _run(*command: str, cwd: Path = ROOT) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_promtool_checks_config_and_rules() -> None:
    promtool = need_binary("promtool")
    out = _run(promtool, "check", "config", str(PROM / "prometheus.yml"))
    assert "SUCCESS" in out
    _run(promtool, "check", "rules", *(str(PROM / "rules" / name) for name in RULE_FILES))
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert config["rule_files"] == [f"rules/{name}" for name in RULE_FILES]


def test_every_alert_fires_when_it_should_and_not_before() -> None:
    promtool = need_binary("promtool")
    out = _run(promtool, "test", "rules", "alerts_test.yml", cwd=PROM / "tests")
    assert "SUCCESS" in out
    tests = yaml.safe_load((PROM / "tests" / "alerts_test.yml").read_text())["tests"]
    alerts = [r for g in yaml.safe_load((PROM / "rules" / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    assert {t["name"] for t in tests} == {a["alert"] for a in alerts}
    assert len(alerts) >= 20
    for alert in alerts:
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert {"summary", "description", "runbook"} <= set(alert["annotations"])


def _load(path: Path) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def test_anomaly_alerts_fire_on_injected_faults_and_not_on_a_daily_cycle_or_a_ramp(tmp_path: Path) -> None:
    """promtool on generated traffic (prometheus/tests/build_anomaly_tests.py): minute by minute
    with noise, a daily cycle's morning and a traffic ramp fire no anomaly alert; a hit-ratio
    collapse, a latency step, an error step, a cost surge and a surge of distinct prompts each
    fire theirs, and only theirs, within 20 minutes, and nothing before."""
    promtool = need_binary("promtool")
    builder = _load(PROM / "tests" / "build_anomaly_tests.py")
    (tmp_path / "anomaly_test.yml").write_text(builder.render())
    out = _run(promtool, "test", "rules", "anomaly_test.yml", cwd=tmp_path)
    assert "SUCCESS" in out
    rules = builder.anomaly_rules()
    fired = {alert for _, _, firing in builder.SCENARIOS.values() for alert in firing}
    assert fired == set(rules)  # every anomaly alert is shown to fire on some fault
    calm = [name for name, (_, _, firing) in builder.SCENARIOS.items() if not firing]
    assert {"daily cycle", "traffic ramp"} <= set(calm)
    for test in builder.build()["tests"]:
        checked = {check["alertname"] for check in test["alert_rule_test"]}
        assert checked == set(rules), test["name"]  # each shape checks every anomaly alert
    for rule in rules.values():
        assert rule["labels"] == {"severity": "warning", "kind": "anomaly"}
        assert {"summary", "description", "runbook"} <= set(rule["annotations"])


def test_generated_files_are_current() -> None:
    for path, output in (
        (PROM / "tests" / "build_alert_tests.py", PROM / "tests" / "alerts_test.yml"),
        (ROOT / "grafana" / "build_dashboard.py", DASHBOARD),
    ):
        assert _load(path).render() == output.read_text(), f"run: python {path.relative_to(ROOT)}"


def test_alertmanager_config() -> None:
    amtool = need_binary("amtool")
    out = _run(amtool, "check-config", str(PROM / "alertmanager.yml"))
    assert "SUCCESS" in out
    config = yaml.safe_load((PROM / "alertmanager.yml").read_text())
    severities = {m for route in config["route"]["routes"] for m in route["matchers"]}
    assert severities == {'severity="critical"', 'severity="warning"'}
    assert any(
        r["source_matchers"] == ['severity="critical"'] and r["target_matchers"] == ['severity="warning"']
        for r in config["inhibit_rules"]
    )


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_is_portable_and_complete() -> None:
    dashboard = _dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    panels = dashboard["panels"]
    assert len(panels) >= 21
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["fieldConfig"]["defaults"]["unit"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])


# --- live ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus_on_live_server(_fake_upstream_process: FakeUpstreamProcess) -> Iterator[tuple[str, Server]]:
    binary = need_binary("prometheus")
    env = {
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "ANTHROPIC_BASE_URL": _fake_upstream_process.url,
        "LLM_MODEL": "claude-sonnet-4-5",
        "RATE_LIMIT": "5/minute",
        "TRUSTED_PROXIES": "1",
        "CACHE_DEFAULT_TTL": "2",
        "UPSTREAM_MAX_RETRIES": "2",
        "JOB_RUNNER": "server",  # the server's workers run the jobs too (their figures on this /metrics)
        "UPSTREAM_MAX_CONCURRENCY": "8",
    }
    # Redis: the shared layer, so the per-caller rate limit holds across both workers.
    with (
        redis_server() as redis_url,
        start_server({**env, **redis_env(redis_url)}, workers=2) as server,
        tempfile.TemporaryDirectory() as workdir,
        tempfile.TemporaryDirectory() as edge_dir,
        nginx([server.url.removeprefix("http://")], need_binary("nginx"), workdir=edge_dir) as front,
        mtail(need_binary("mtail"), f"{edge_dir}/{EDGE_LOG}") as edge_metrics,
    ):
        # The edge tier's counters: a miss and a hit through nginx (their own callers).
        for i in range(2):
            body = {"prompt": "a dashboard prompt at the edge", "mode": "code"}
            requests.post(
                front + "/api/optimize", json=body, headers={"X-Forwarded-For": f"198.51.100.{240 + i}"}, timeout=15
            )
        work = Path(workdir)
        config = yaml.safe_load((PROM / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        for group_file in RULE_FILES:
            # Time scaled down for the test: every group each second, the anomaly bands' 15 min
            # offset 15 s (a band has data once its window has some).
            text = (PROM / "rules" / group_file).read_text().replace("offset 15m", "offset 15s")
            rules = yaml.safe_load(text)
            for group in rules["groups"]:
                group["interval"] = "1s"
            (work / group_file).write_text(yaml.safe_dump(rules))
        config["rule_files"] = list(RULE_FILES)
        config.pop("alerting")
        config["scrape_configs"][0]["static_configs"] = [{"targets": [server.url.removeprefix("http://")]}]
        config["scrape_configs"][1]["static_configs"] = [{"targets": [edge_metrics.removeprefix("http://")]}]
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/-/ready", timeout=30, proc=proc)
            yield f"http://127.0.0.1:{port}", server
        finally:
            stop(proc)


def _traffic(server: Server, upstream: FakeUpstreamProcess) -> None:
    def post(prompt: str, ip: str, mode: str = "reasoning") -> requests.Response:
        return requests.post(
            server.url + "/api/optimize",
            json={"prompt": prompt, "mode": mode},
            headers={"X-Forwarded-For": ip, "Connection": "close"},
            timeout=15,
        )

    for i in range(24):  # misses and hits over both workers, by many callers
        post(f"dashboard prompt {i % 8}", f"198.51.100.{i}", mode=("reasoning", "video", "code")[i % 3])
    upstream.control(faults=[{"status": 529}])  # one retry
    post("retry me", "198.51.100.100")
    statuses = [post("flood", "192.0.2.1").status_code for _ in range(7)]  # 5/minute per caller
    assert statuses.count(429) == 2
    assert post("going stale", "198.51.100.101").headers["X-Cache"] == "MISS"
    time.sleep(2.5)  # CACHE_DEFAULT_TTL is 2 s: the answer has expired, and only that
    upstream.control(sticky={"status": 500})
    assert post("going stale", "198.51.100.101").headers["X-Cache"] == "STALE"
    upstream.control(sticky=None)
    _stream_traffic(server, upstream)
    query = '{ generateQuestions(input: {prompt: "a dashboard question"}) { provider } }'
    graph = requests.post(
        server.url + "/graphql", json={"query": query}, headers={"X-Forwarded-For": "198.51.100.220"}, timeout=15
    )
    assert graph.status_code == 200 and "errors" not in graph.json(), graph.text
    burst, _ = held_burst(upstream, [server.url], lambda i: post("burst together", f"198.51.100.{150 + i}"), 10)
    assert sorted(r.headers["X-Cache"] for r in burst) == ["COALESCED"] * 9 + ["MISS"]  # Redis: one call
    _job_traffic(server)


def _job_traffic(server: Server) -> None:
    """Jobs of each priority, run by the server's workers to their end."""
    ids = []
    for i, priority in enumerate(("high", "normal", "low")):
        body = {"task": "optimize", "input": {"prompt": f"a job for the dashboard {i}", "mode": "code"}}
        response = requests.post(
            server.url + "/api/jobs",
            json={**body, "priority": priority},
            headers={"X-Forwarded-For": f"198.51.100.{210 + i}"},
            timeout=15,
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])

    polls = itertools.count()

    def finished() -> bool:
        # Each poll as another caller: RATE_LIMIT here is 5/minute per caller.
        states = [
            requests.get(
                f"{server.url}/api/jobs/{i}",
                headers={"X-Forwarded-For": f"203.0.{next(polls) // 250}.{next(polls) % 250}"},
                timeout=15,
            ).json()["status"]
            for i in ids
        ]
        return all(state == "succeeded" for state in states)

    wait_until(finished, what="the dashboard's jobs")


def _stream_traffic(server: Server, upstream: FakeUpstreamProcess) -> None:
    """One stream read to its end, and one its only caller leaves (cancelled upstream)."""
    body = {"prompt": "a streamed dashboard prompt", "mode": "code"}
    headers = {"X-Forwarded-For": "198.51.100.200"}
    with requests.post(server.url + "/api/optimize-stream", json=body, headers=headers, stream=True, timeout=30) as r:
        assert r.status_code == 200 and b"event: done" in r.content
    upstream.control(stream_chunks=400, stream_interval=0.05)
    aborted = upstream.stats()["streams"]["aborted"]
    body = {"prompt": "a stream nobody finishes", "mode": "code"}
    response = requests.post(server.url + "/api/optimize-stream", json=body, headers=headers, stream=True, timeout=30)
    next(response.iter_content(chunk_size=None))
    response.close()
    wait_until(lambda: upstream.stats()["streams"]["aborted"] > aborted, what="the cancelled stream")
    upstream.control(stream_chunks=8, stream_interval=0)


def _query(prometheus: str, expr: str) -> list[Any]:
    answer = requests.get(prometheus + "/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", f"{expr}: {answer}"
    return answer["data"]["result"]  # type: ignore[no-any-return]


def test_every_panel_and_recording_rule_has_data(
    prometheus_on_live_server: tuple[str, Server], fake_upstream: FakeUpstreamProcess
) -> None:
    prometheus, server = prometheus_on_live_server
    _traffic(server, fake_upstream)
    expressions = [(f"panel '{p['title']}'", t["expr"]) for p in _dashboard()["panels"] for t in p["targets"]]
    rules = yaml.safe_load((PROM / "rules" / "recording.yml").read_text())["groups"][0]["rules"]
    expressions += [(f"rule {r['record']}", r["expr"]) for r in rules]
    expressions += [(f"recorded {r['record']}", r["record"]) for r in rules]
    anomaly = yaml.safe_load((PROM / "rules" / "anomaly.yml").read_text())["groups"][0]["rules"]
    expressions += [(f"recorded {r['record']}", r["record"]) for r in anomaly]  # their windows: 15 s back
    deadline = time.monotonic() + 90  # bounds a hang; data usually arrives within seconds
    while True:
        # Traffic while waiting: a ratio over the last 5 minutes is defined only while requests
        # keep coming (the anomaly bands leave out what is not defined).
        requests.post(server.url + "/api/optimize", json={"prompt": "still here", "mode": "code"}, timeout=15)
        empty = [(name, expr) for name, expr in expressions if not _query(prometheus, expr)]
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not empty, "no data for:\n" + "\n".join(f"  {name}: {expr}" for name, expr in empty)
    print(f"\n{len(expressions)} panel expressions and recording rules all returned data from a live Prometheus")
