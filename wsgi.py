"""WSGI entry point: gevent patches the process before anything else is imported."""

from gevent import monkey

monkey.patch_all()

from app import create_app  # noqa: E402  (must follow the patch)

app = create_app()
