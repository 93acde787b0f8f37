"""WSGI entry point for the bare baseline app (gevent patched first, as in wsgi.py)."""

from gevent import monkey

monkey.patch_all()

from loadtest.bare_app import create_app  # noqa: E402

app = create_app()
