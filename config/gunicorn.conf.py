"""Gunicorn settings: gevent workers, production-shaped timeouts, settings checked at start-up.

gunicorn -c config/gunicorn.conf.py wsgi:app
"""

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from config.settings import ConfigError, load_settings

try:
    _settings = load_settings()
except ConfigError as exc:  # one line naming the variable, no traceback
    sys.stderr.write(f"configuration error: {exc}\n")
    sys.exit(2)

if _settings.rate_limit and not _settings.redis_url and _settings.web_concurrency > 1:
    # Once, in the master: each worker keeps its own counts without shared storage.
    sys.stderr.write(
        f"warning: RATE_LIMIT={_settings.rate_limit} is counted per worker without REDIS_URL; with "
        f"{_settings.web_concurrency} workers a client may get up to {_settings.web_concurrency}x that\n"
    )

bind = f"{_settings.host}:{_settings.port}"
workers = _settings.web_concurrency
worker_class = "config.worker.GracefulGeventWorker"  # gevent, closing idle keep-alives on SIGTERM
worker_connections = _settings.worker_connections
backlog = 2048

# gevent workers answer the arbiter's heartbeat between greenlets; a long request does not block it.
timeout = 120
# Longer than the slowest mode (video: 90 s) so SIGTERM lets every accepted request finish.
graceful_timeout = 100
keepalive = 75  # longer than nginx's upstream keepalive_timeout (60 s): nginx closes first
# Gunicorn's largest request line (default 4094): a GET carrying its request in its URL (the
# CDN's door, app/api/_edge.py) may be up to 8,000 characters, as nginx and CloudFront allow.
limit_request_line = 8190

# The app writes one JSON line per request itself; gunicorn's own messages go to stderr.
accesslog = None
errorlog = "-"
loglevel = "info" if _settings.log_level == "DEBUG" else _settings.log_level.lower()
proc_name = "prompt-builder-api"
forwarded_allow_ips = "127.0.0.1,::1"


def on_starting(server):
    """Give prometheus_client a fresh multiprocess directory before any worker forks."""
    import shutil
    import tempfile

    path = _settings.prometheus_multiproc_dir
    if not path:
        path = tempfile.mkdtemp(prefix="prompt-builder-metrics-")
        _hooks["own_dir"] = path  # ours to remove on exit; a directory the operator chose is kept
    shutil.rmtree(path, ignore_errors=True)  # stale files from a previous run would be summed in
    os.makedirs(path, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    # Imported here, once the variable is set (prometheus_client picks its value class at import,
    # and workers inherit it), and not in child_exit: that runs in the SIGCHLD handler, where two
    # workers exiting together would re-enter a half-finished import and crash the master.
    from prometheus_client import multiprocess

    _hooks["mark_process_dead"] = multiprocess.mark_process_dead


_hooks: dict[str, Any] = {}


def on_exit(server):
    """Remove the metrics directory this server made for itself."""
    import shutil

    if "own_dir" in _hooks:
        shutil.rmtree(_hooks["own_dir"], ignore_errors=True)


def child_exit(server, worker):
    """A dead worker's live gauges (in-flight, cache bytes) must stop counting."""
    mark_process_dead = _hooks.get("mark_process_dead")
    if mark_process_dead is not None:
        mark_process_dead(worker.pid)


def post_worker_init(worker):
    """Jobs: with JOB_RUNNER=server one worker per machine runs them (the others stand by to
    take over); otherwise each worker only reports the queue's figures."""
    parts = _parts_of(worker)
    if parts is not None and parts.jobs is not None:
        if _settings.job_runner == "server":
            parts.jobs.runner.start()
        else:
            parts.jobs.start_reporting()


def worker_exit(server, worker):
    """Stop this worker's jobs (unfinished ones are queued again at once), write the budget uses
    the store could not take yet (one last try), then export the spans still queued in this
    worker before it goes."""
    parts = _parts_of(worker)
    if parts is None:
        return
    if parts.jobs is not None:
        parts.jobs.stop(grace=5.0)
    spend = parts.prompts.gateway.upstream.spend
    if spend is not None:
        spend.flush()
    if parts.tracing is not None:
        parts.tracing.shutdown()


def _parts_of(worker):
    """The worker's app parts (app.parts.Parts); None before the app was loaded, or when the app
    is not the service (`make bench` serves its baselines with this configuration too)."""
    from app.parts import KEY

    return getattr(getattr(worker, "wsgi", None), "extensions", {}).get(KEY)
