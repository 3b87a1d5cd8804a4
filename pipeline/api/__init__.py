"""The HTTP API: :func:`create_app` builds it (``pipeline.api.app``); one router per concern."""

from pipeline.api.app import create_app

__all__ = ["create_app"]
