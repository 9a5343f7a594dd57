"""The HTTP API: a thin FastAPI caller of the same facade as the app and the CLI (``from core import``
only; tests/test_layering.py enforces it). Build it with :func:`api.app.create_app`."""
