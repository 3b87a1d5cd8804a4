"""Rendering the explorer's pages: the Jinja2 environment (templates shipped in the package,
autoescaped), the filters they use, and :func:`render`, which gives every page what the layout
needs (the mount path, who is signed in, which vendored scripts are installed)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, get_args

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from pipeline.db.status import ValidationStatus
from pipeline.extract.schemas import PatternType
from pipeline.intake.apikeys import Principal
from pipeline.ui.auth import session_kind
from pipeline.ui.vendor import available

#: Headers of every page: no caching of signed-in content.
PAGE_HEADERS = {"Cache-Control": "no-store"}
PATTERN_TYPES: tuple[str, ...] = get_args(PatternType)
STATUSES: tuple[str, ...] = tuple(s.value for s in ValidationStatus)
#: Colours of pattern types (graph nodes, legend and badges), each readable on white.
PALETTE = ("#c62828", "#1565c0", "#6a1b9a", "#546e7a", "#2e7d32", "#8d6e00", "#00838f",
           "#d84315", "#ad1457", "#4e342e", "#283593", "#558b2f", "#37474f")  # fmt: skip
TYPE_COLORS: dict[str, str] = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(PATTERN_TYPES)}


def _pct(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value * 100:.{digits}f} %"


def _num(value: float | Decimal | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{float(value):,.{digits}f}"


def _when(value: dt.datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("pipeline.ui", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(pct=_pct, num=_num, when=_when)
    return env


templates = Jinja2Templates(env=_environment())


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    who: Principal | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """Template ``name`` with ``context`` and the layout's variables: ``root`` (the mount path,
    prefix of every link), ``kind`` (``project``/``operator``/``None``), ``project`` (the
    signed-in project's name), ``vendor`` (installed scripts by name) and ``type_colors``."""
    settings = request.app.state.pipeline.settings
    full = {
        "root": request.scope.get("root_path", ""),
        "kind": session_kind(request),
        "project": who.project_name if who else None,
        "vendor": available(settings),
        "type_colors": TYPE_COLORS,
        "pattern_types": PATTERN_TYPES,
        "statuses": STATUSES,
        "path": request.url.path,
        **context,
    }
    return templates.TemplateResponse(
        request, name, full, status_code=status_code, headers=PAGE_HEADERS
    )
