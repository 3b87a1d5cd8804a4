"""``patterns model path``: the local extraction model's folder, for serving it elsewhere (for
example ``vllm serve`` behind ``PATTERNS_LOCAL_ENGINE=openai``)."""

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
