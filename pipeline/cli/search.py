"""``patterns search``: the active patterns nearest a text, for operators."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli.common import err, open_db, start


def search(
    text: Annotated[str, typer.Argument(help="What to look for.")],
    project: Annotated[
        str | None, typer.Option(help="Project name (owner/repo). Default: every project.")
    ] = None,
    type_: Annotated[str | None, typer.Option("--type", help="Only this pattern type.")] = None,
    k: Annotated[int, typer.Option("-k", min=1, max=100, help="Results.")] = 10,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """The active patterns nearest TEXT by cosine distance (score 1 - d/2), with their sources.
    Each hit is recorded as a usage."""
    settings = start(json_logs=json_out)
    from sqlalchemy import select

    from pipeline.db.engine import ALL_PROJECTS
    from pipeline.db.models import Project
    from pipeline.store.embedder import SentenceTransformerEmbedder
    from pipeline.store.search import search as search_store

    with open_db(settings) as db:
        project_id = None
        if project is not None:
            # Finding the project by name spans projects: an operator's lookup.
            with db.session(ALL_PROJECTS) as session:
                project_id = session.scalar(select(Project.id).where(Project.name == project))
            if project_id is None:
                err.print(f"[red]no project {project!r}[/red]")
                raise typer.Exit(1)
        vector = SentenceTransformerEmbedder.from_settings(settings).encode([text])[0]
        hits = search_store(
            db, vector.tolist(), project_id=project_id, k=k, type_=type_, used_by="search:cli",
            query=text,
        )  # fmt: skip
    if json_out:
        results = [{**h.as_json(), "project": h.project} for h in hits]
        typer.echo(json.dumps({"results": results}))
        return
    table = Table(title=f"patterns search {text!r}")
    for column in ("score", "project", "type", "title", "status", "validations", "sources"):
        table.add_column(column, justify="right" if column in ("score", "validations") else "left")
    for h in hits:
        table.add_row(f"{h.score:.3f}", h.project, h.type, h.title, h.validation_status,
                      str(h.validation_count), str(len(h.sources)))  # fmt: skip
    Console().print(table)
