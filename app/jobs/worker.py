"""`make worker`: a process that only runs jobs, JOB_CONCURRENCY at once, from the queue the
servers put them on (Redis for a fleet; the machine's SQLite file without it).

    python -m app.jobs.worker

With JOB_WORKER_PORT set it serves the app on that port for Prometheus and probes: /metrics
(its jobs' counters and timings), /health/live, /health/ready.

SIGTERM or SIGINT: take no more jobs, give the running ones WORKER_GRACE seconds, then queue
the unfinished ones again at once (another worker takes them) and exit.
"""

from gevent import monkey

monkey.patch_all()

import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402

from config.settings import ConfigError, load_settings  # noqa: E402

WORKER_GRACE = 30.0


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        return 2
    from app import create_app
    from app.parts import parts_of

    app = create_app(settings)
    jobs = parts_of(app).jobs
    unavailable = parts_of(app).jobs_unavailable
    if unavailable is not None:
        sys.stderr.write(f"the job store cannot be opened: {unavailable.why}\n")
        return 2
    if jobs is None:
        sys.stderr.write("configuration error: jobs need REDIS_URL (a fleet) or CACHE_DIR (one machine)\n")
        return 2
    log = logging.getLogger("app.jobs")
    stop = Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop.set)
    server = None
    if settings.job_worker_port:
        from gevent.pywsgi import WSGIServer

        server = WSGIServer((settings.host, settings.job_worker_port), app, log=None)
        server.start()
    jobs.runner.start()
    log.info(
        "job worker started: up to %d jobs at once%s",
        settings.job_concurrency,
        f"; /metrics on port {settings.job_worker_port}" if server is not None else "",
    )
    stop.wait()
    if server is not None:
        server.stop(timeout=1)
    log.info("job worker stopping: %.0f s for the running jobs", WORKER_GRACE)
    jobs.stop(grace=WORKER_GRACE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
