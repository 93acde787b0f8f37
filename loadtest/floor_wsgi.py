"""WSGI entry point for the miss floor app (gevent patched first, as in wsgi.py)."""

from gevent import monkey

monkey.patch_all()

from loadtest.floor_app import create_app  # noqa: E402

app = create_app()
