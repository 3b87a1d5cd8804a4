"""The ``patterns`` console script: the CLI (:mod:`pipeline.cli`) with the Celery runtime.

This is the entry point where the Celery side is built and handed to the library, which never
imports ``workers/`` itself.
"""

from __future__ import annotations


def main() -> None:
    """Run ``patterns`` with :class:`~workers.runtime.CeleryRuntime`."""
    from pipeline.cli import main as cli_main
    from workers.runtime import CeleryRuntime

    cli_main(CeleryRuntime())


if __name__ == "__main__":
    main()
