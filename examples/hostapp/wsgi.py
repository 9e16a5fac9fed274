"""The WSGI entry point (see gunicorn.conf.py and README.md)."""

from examples.hostapp import create_app

app = create_app()
