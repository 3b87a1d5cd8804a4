"""The pattern explorer in the browser (``/ui``): server-rendered Jinja2 pages with htmx, the
project's graph drawn by Cytoscape.js, the live feed over server-sent events, and the operator
page. Everything is served by the API itself; the third-party scripts are installed by
``make install`` into ``.tools/ui`` (never fetched from a CDN).

Mounted by :func:`pipeline.api.app.create_app` as a sub-application with its own signed session
cookie (:func:`pipeline.ui.app.create_ui`).
"""

from pipeline.ui.app import create_ui

__all__ = ["create_ui"]
