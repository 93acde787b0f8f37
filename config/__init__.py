"""Deployment configuration: settings classes, gunicorn and nginx files."""
