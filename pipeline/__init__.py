"""pattern-pipeline: turns developer activity into patterns, relationships and validations.

The library half of the project: settings, database, ingest, extraction, embeddings and the CLI.
Celery lives in ``workers/``; the only bridge from here is :mod:`pipeline.dispatch`.
"""

__version__ = "0.1.0"
