"""Jobs: long requests accepted now and answered later, in priority order, by runners that share
the gateway's cache, coalescing and upstream budget (app.jobs.service). Its modules are imported
by name: `python -m app.jobs.worker` must patch gevent before any of them is imported."""
