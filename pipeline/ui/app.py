"""The explorer as an ASGI sub-application, mounted at ``/ui`` by the API
(:func:`pipeline.api.app.create_app`): it shares the API's :class:`~pipeline.api.deps.AppState`
(database, embedder, live feed) and adds what only browsers need: the signed session cookie
(path ``/ui`` only), a strict Content-Security-Policy (scripts from this server only; nothing may
be loaded from or sent to another host), the sign-in form, the operator page, and the static
and vendored files.
"""

from __future__ import annotations

import secrets
import urllib.parse
from pathlib import Path

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.api.deps import DB, AppState, State, call
from pipeline.errors import DatabaseUnavailableError
from pipeline.intake.apikeys import Principal
from pipeline.ui import pages
from pipeline.ui.auth import (
    Operator,
    OperatorViewer,
    SignInRequired,
    admin_token,
    check_key,
    is_admin_token,
    read_form,
    safe_next,
    same_origin,
    start_session,
)
from pipeline.ui.chart import daily_chart
from pipeline.ui.opsdata import ops_overview
from pipeline.ui.render import render
from pipeline.ui.vendor import vendored_file

log = structlog.get_logger(__name__)

STATIC = Path(__file__).parent / "static"
#: Where the API mounts the explorer (the session cookie's path).
MOUNT = "/ui"
#: Seconds a sign-in lasts.
SESSION_MAX_AGE_S = 8 * 3600
#: Nothing but this server: scripts, styles (Cytoscape.js and htmx set inline styles), images,
#: connections (the event stream), forms; no framing.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]

router = APIRouter()


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response of the explorer (an ASGI middleware that
    leaves streaming responses, such as the event stream, streaming)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add the headers to the response's start."""

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


@router.get("/signin", name="signin")
async def signin_form(request: Request, next: str | None = None) -> Response:
    """The sign-in form."""
    return render(request, "signin.html", {"error": None, "next": safe_next(request, next)})


@router.post("/signin")
async def signin(request: Request, state: State, db: DB) -> Response:
    """Sign in with a project API key (to the project's pages) or the admin token (to the
    operator page); anything else is refused (401) with the form and a visible error."""
    if not same_origin(request):
        return Response("cross-site form refused", status_code=403)
    form = await read_form(request)
    key, target = form.get("key", "").strip(), safe_next(request, form.get("next"))
    who: Principal | Operator | None = None
    if key and is_admin_token(state.settings, key):
        who = Operator()
    elif key:
        who = await call(check_key, db, key)
    if who is None:
        log.info("ui_signin_refused")
        error = "Enter an API key." if not key else "That key is not valid (unknown or revoked)."
        context = {"error": error, "next": target}
        return render(request, "signin.html", context, status_code=401)
    start_session(request, who, state.settings)
    home = "ops" if isinstance(who, Operator) else "search"
    return RedirectResponse(target or request.url_for(home).path, status_code=303)


@router.post("/signout", name="signout")
async def signout(request: Request) -> Response:
    """Forget the session."""
    if not same_origin(request):
        return Response("cross-site form refused", status_code=403)
    request.session.clear()
    return RedirectResponse(request.url_for("signin").path, status_code=303)


@router.get("/ops", name="ops")
async def ops_page(request: Request, state: State, db: DB, _: OperatorViewer) -> Response:
    """The operator page: queues, interactions by status, today's spend against the budget,
    extraction quality, the error-fix acceptance rate and the daily chart."""
    overview = await call(ops_overview, db, state.settings)
    chart = daily_chart(overview.report.daily)
    return render(request, "ops.html", {"o": overview, "chart": chart})


@router.get("/vendor/{name}", name="vendor")
async def vendor(request: Request, state: State, name: str) -> Response:
    """A vendored third-party script (htmx, Cytoscape.js); 404 when it is not installed."""
    path = vendored_file(state.settings, name)
    if path is None:
        return Response("not installed: run make install", status_code=404)
    return FileResponse(
        path, media_type="text/javascript", headers={"Cache-Control": "max-age=3600"}
    )


def _sign_in_required(request: Request, exc: Exception) -> Response:
    """Pages send browsers to the sign-in form (and back after it); htmx gets the same as
    ``HX-Redirect``; the data endpoints answer 401."""
    operator_page = isinstance(exc, SignInRequired) and exc.operator
    if request.url.path.endswith(("/events", "/graph.json")):
        return JSONResponse({"detail": "sign in first"}, status_code=401)
    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = f"{request.url_for('signin').path}?next={urllib.parse.quote(back)}"
    if operator_page and admin_token(request.app.state.pipeline.settings) is None:
        return render(
            request,
            "error.html",
            {
                "title": "Operator page closed",
                "message": "Set PATTERNS_ADMIN_TOKEN to open the operator page.",
            },
            status_code=403,
        )
    if request.headers.get("HX-Request"):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def _database_unavailable(request: Request, exc: Exception) -> Response:
    log.error("ui_database_unavailable", error=str(exc))
    return render(
        request,
        "error.html",
        {
            "title": "Database unavailable",
            "message": "The database does not answer; try again shortly.",
        },
        status_code=503,
    )


def _not_found(request: Request, exc: Exception) -> Response:
    return render(
        request,
        "error.html",
        {"title": "Not found", "message": "There is no page here."},
        status_code=404,
    )


def create_ui(state: AppState) -> FastAPI:
    """The explorer on the API's ``state``; mount it at :data:`MOUNT`. The session cookie is signed
    with ``settings.ui_session_secret`` (a random key per process when unset)."""
    ui = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, title="pattern explorer")
    ui.state.pipeline = state
    secret = state.settings.ui_session_secret
    key = secret.get_secret_value() if secret and secret.get_secret_value() else None
    ui.add_middleware(
        SessionMiddleware,
        secret_key=key or secrets.token_urlsafe(32),
        session_cookie="patterns_ui",
        max_age=SESSION_MAX_AGE_S,
        path=MOUNT,
        same_site="lax",
        https_only=state.settings.ui_cookie_secure,
    )
    ui.add_middleware(SecurityHeaders)
    ui.include_router(router)
    ui.include_router(pages.router)
    ui.mount("/static", StaticFiles(directory=STATIC), name="static")
    ui.add_exception_handler(SignInRequired, _sign_in_required)
    ui.add_exception_handler(DatabaseUnavailableError, _database_unavailable)
    ui.add_exception_handler(404, _not_found)
    return ui
