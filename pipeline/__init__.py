"""pattern-pipeline: turns developer activity into patterns, relationships and validations.

The library, one subpackage per stage: :mod:`.intake` (deliveries in, the outbox),
:mod:`.extract` (prompts, schemas, the attempt loop, writes), :mod:`.llm` (engines),
:mod:`.spend` (routing, budget, pricing), :mod:`.store` (embeddings), :mod:`.github`,
:mod:`.errorfix`, :mod:`.ops` (stats, reports, metrics), :mod:`.api` (HTTP), :mod:`.cli`
(Typer) and :mod:`.db`. Celery lives in ``workers/``; the library publishes through the
:class:`~pipeline.dispatch.Dispatcher` it is handed and never imports ``workers``.
"""

__version__ = "0.1.0"
