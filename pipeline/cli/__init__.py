"""The ``patterns`` command line (Typer), one module per command group.

``run`` processes files to completion and ``ingest`` only stores and enqueues them
(:mod:`.run`); ``worker``, ``beat``, ``serve`` and ``flower`` run services (:mod:`.services`,
:mod:`.flower`); ``stats``, ``db upgrade`` and ``apikey`` work on the database (:mod:`.data`);
``costs``, ``report`` and ``errors`` report and review; ``eval`` scores extraction against
labelled deliveries (:mod:`.evaluate`); ``model path`` prints the local
model's folder (:mod:`.model`); ``github recover`` asks GitHub to redeliver missed webhook
deliveries (:mod:`.github`). Each command builds the settings once
(:func:`.common.start`) and passes them down.

The console script is ``workers.main:main``: it hands the Celery runtime to :func:`main`, so
this package never imports ``workers/``.
"""

from __future__ import annotations

import typer

from pipeline.cli import (
    costs,
    data,
    errors,
    evaluate,
    github,
    model,
    monitor,
    report,
    run,
    search,
    services,
)
from pipeline.cli.common import Runtime

app = typer.Typer(
    help="pattern-pipeline: developer activity in, patterns out.", no_args_is_help=True
)
app.command("run")(run.run)
app.command("ingest")(run.ingest)
app.command("worker")(services.worker)
app.command("beat")(services.beat)
app.command("serve")(services.serve)
app.command("flower")(monitor.flower)
app.command("stats")(data.stats)
app.command("search")(search.search)
app.command("costs")(costs.costs)
app.command("report")(report.report)
app.command("eval")(evaluate.eval_)
app.add_typer(data.db_app, name="db")
app.add_typer(data.apikey_app, name="apikey")
app.add_typer(errors.errors_app, name="errors")
app.add_typer(model.model_app, name="model")
app.add_typer(github.github_app, name="github")


def main(runtime: Runtime | None = None) -> None:
    """Run the CLI with ``runtime`` as the context object (commands that need Celery use it)."""
    app(obj=runtime)
