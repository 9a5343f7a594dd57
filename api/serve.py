"""What ``visual-anomaly serve-api`` runs in each uvicorn worker: the app over the environment's
collection. A factory (not a module-level app) so importing this module opens nothing."""

from __future__ import annotations

from dataclasses import replace

from fastapi import FastAPI

from api.app import create_app
from core import Collection, Settings, setup_observability


def app_from_env() -> FastAPI:
    settings = Settings.from_env()
    # The API serves /metrics itself; METRICS_PORT belongs to the Streamlit app's process.
    setup_observability(replace(settings, metrics_port=None))
    collection = Collection.open(settings)
    collection.warm_up_in_background()  # the first requests after a start find the analysis loaded
    return create_app(collection)
