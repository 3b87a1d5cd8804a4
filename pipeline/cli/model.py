"""``patterns model path``: the local extraction model's folder, for serving it elsewhere (for
example ``vllm serve`` behind ``PATTERNS_LOCAL_ENGINE=openai``); ``patterns model reap``: stop
vLLM engine processes whose owner is gone."""

from __future__ import annotations

import sys

import typer

from pipeline.cli.common import start

model_app = typer.Typer(help="The local extraction model.", no_args_is_help=True)


@model_app.command("path")
def path() -> None:
    """Print the extraction model's folder (``PATTERNS_EXTRACT_MODEL``, else the packaged
    SmolLM2-135M-Instruct, converted into the data folder on first use: about 15 s)."""
    settings = start(json_logs=False)
    from pipeline.llm.local_models import resolve_extract_model

    sys.stdout.write(resolve_extract_model(settings.extract_model, settings.data_dir) + "\n")


@model_app.command("reap")
def reap() -> None:
    """Stop this user's vLLM engine processes (VLLM::EngineCore, VLLM::Worker) whose owner is
    gone, e.g. after a `patterns worker` was killed with SIGKILL; prints their pids. Workers do
    this at start-up too."""
    from pipeline.llm.reaper import reap_orphans

    stopped = reap_orphans()
    sys.stdout.write(
        f"stopped {len(stopped)} orphaned engine processes{': ' if stopped else ''}"
        f"{' '.join(map(str, stopped))}\n"
    )
