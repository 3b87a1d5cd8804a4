"""The explorer's third-party scripts: installed at ``make install`` by npm into
``.tools/ui/node_modules`` (exact versions, see the Makefile), served from ``/ui/vendor/``.
When they are missing the pages still work: search and browsing are plain forms and links, and
the graph's place says how to install the library."""

from __future__ import annotations

from pathlib import Path

from pipeline.settings import Settings

#: The served name → its path under ``node_modules``.
VENDORED: dict[str, str] = {
    "htmx.min.js": "htmx.org/dist/htmx.min.js",
    "cytoscape.min.js": "cytoscape/dist/cytoscape.min.js",
}
#: Where ``make install`` puts them, relative to the checkout.
DEFAULT_DIR = Path(__file__).resolve().parents[2] / ".tools" / "ui" / "node_modules"


def vendor_dir(settings: Settings) -> Path:
    """The ``node_modules`` folder the scripts are served from."""
    return settings.ui_vendor_dir or DEFAULT_DIR


def vendored_file(settings: Settings, name: str) -> Path | None:
    """The file of vendored script ``name``, or ``None`` when it is unknown or not installed."""
    relative = VENDORED.get(name)
    if relative is None:
        return None
    path = vendor_dir(settings) / relative
    return path if path.is_file() else None


def available(settings: Settings) -> dict[str, bool]:
    """Which vendored scripts are installed, by served name."""
    return {name: vendored_file(settings, name) is not None for name in VENDORED}
