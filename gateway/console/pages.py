"""The console's routes: pages rendered on the server, a small JSON API for the playground.

Every handler goes through ``_guarded``: it finds the session (or refuses: a redirect to the login
page for a page, 401 for the API and any POST), checks the CSRF token on every POST and adds the
security headers. Only the login page and the stylesheet are served without a session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import parse_qs, quote

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.console.assets import STATIC_TYPES, load_static, template_environment
from gateway.console.auth import LOGIN_COOKIE, ConsoleAuth, Session
from gateway.console.charts import interval_chart, sparkline
from gateway.console.diff import prompt_diff
from gateway.console.evals import list_runs, load_run, runs_dir
from gateway.console.playground import Playground, chat_body
from gateway.console.policies import layer_names, prompt_sources, variant_view
from gateway.console.stats import StatsRing
from gateway.console.workbench import diff_view, history_view
from gateway.errors import PrefitError
from gateway.serving.auth import is_local
from gateway.serving.http import read_body
from gateway.serving.runtime import Runtime

__all__ = ["Console"]

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_SECURITY_HEADERS = {
    "content-security-policy": _CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
_PUBLIC_STATIC = frozenset({"console.css"})
_FORM_LIMIT = 16 * 1024
_LOGIN_FAILURE_DELAY_S = 0.4
_STATS_WINDOW_MIN = 15.0
Handler = Callable[[Request, Session], Awaitable[Response]]


def _secured(response: Response) -> Response:
    response.headers.update(_SECURITY_HEADERS)
    return response


def _json(data: object, status: int = 200) -> Response:
    return _secured(Response(orjson.dumps(data), status_code=status, media_type="application/json"))


def _safe_next(value: str | None) -> str:
    if value and value.startswith("/console") and "//" not in value and "\\" not in value:
        return value
    return "/console"


async def _form(request: Request) -> dict[str, str]:
    raw = await read_body(request, _FORM_LIMIT)
    return {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True).items()}


class Console:
    """The console of one gateway: routes under ``/console``, reading ``runtime`` live."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.auth = ConsoleAuth()
        self.templates = template_environment()
        self.static = load_static()
        self.stats = StatsRing(runtime.metrics.registry)
        self.playground = Playground(runtime.metrics)

    @property
    def routes(self) -> list[BaseRoute]:
        g = self._guarded
        return [
            Route("/console", g(self.policies_page), methods=["GET"]),
            Route("/console/login", self.login_page, methods=["GET"]),
            Route("/console/login", self.login, methods=["POST"]),
            Route("/console/logout", g(self.logout), methods=["POST"]),
            Route("/console/policies/{name}", g(self.policy_page), methods=["GET"]),
            Route("/console/playground", g(self.playground_page), methods=["GET"]),
            Route("/console/evals", g(self.evals_page), methods=["GET"]),
            Route("/console/evals/diff", g(self.eval_diff_page), methods=["GET"]),
            Route("/console/evals/history/{policy}", g(self.eval_history_page), methods=["GET"]),
            Route("/console/evals/{name}", g(self.eval_page), methods=["GET"]),
            Route("/console/stats", g(self.stats_page), methods=["GET"]),
            Route("/console/api/render", g(self.api_render, api=True), methods=["POST"]),
            Route("/console/api/send", g(self.api_send, api=True), methods=["POST"]),
            Route("/console/static/{name}", self.static_file, methods=["GET"]),
        ]

    # -- the gate -----------------------------------------------------------------------------

    def _session(self, request: Request, api: bool) -> tuple[Session, bool] | Response:
        """The session, with whether it is new; else the refusal to send."""
        keys = self.runtime.current.admin_keys
        if not keys and not is_local(request.scope):
            message = "The console is served only to local clients when no admin_keys are configured."
            return _json({"error": message}, 403) if api else self._page(request, "message.html", 403, message=message)
        session = self.auth.session(request, keys)
        if session is not None:
            return session, False
        if not keys:
            return self.auth.open(None), True
        if api or request.method != "GET":
            return _json({"error": "Log in to the console first."}, 401)
        target = "/console/login?next=" + quote(
            request.url.path + (f"?{request.url.query}" if request.url.query else "")
        )
        return _secured(RedirectResponse(target, status_code=303))

    def _guarded(self, handler: Handler, api: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            found = self._session(request, api)
            if isinstance(found, Response):
                return found
            session, fresh = found
            if request.method == "POST" and not fresh:
                token = request.headers.get("x-csrf-token")
                if token is None and request.headers.get("content-type", "").startswith(
                    "application/x-www-form-urlencoded"
                ):
                    token = (await _form(request)).get("csrf")
                if not self.auth.csrf_ok(session, token):
                    return _json({"error": "Missing or wrong CSRF token."}, 403)
            elif request.method == "POST":
                return _json({"error": "Missing or wrong CSRF token."}, 403)
            response = await handler(request, session)
            if fresh:
                self.auth.set_cookie(response, request, session)
            return _secured(response)

        endpoint.__name__ = handler.__name__
        return endpoint

    def _page(self, request: Request, template: str, status: int = 200, **context: Any) -> Response:
        snapshot = self.runtime.current
        context.setdefault("session", None)
        html = self.templates.get_template(template).render(
            path=request.url.path, login_required=bool(snapshot.admin_keys), **context
        )
        return _secured(HTMLResponse(html, status_code=status))

    # -- login --------------------------------------------------------------------------------

    async def login_page(
        self, request: Request, error: str | None = None, status: int = 200, next_path: str | None = None
    ) -> Response:
        if not self.runtime.current.admin_keys:
            return _secured(RedirectResponse("/console", status_code=303))
        nonce = self.auth.login_nonce(request)
        response = self._page(
            request,
            "login.html",
            status,
            token=self.auth.login_token(nonce),
            next=_safe_next(next_path or request.query_params.get("next")),
            error=error,
        )
        self.auth.set_login_cookie(response, request, nonce)
        return response

    async def login(self, request: Request) -> Response:
        keys = self.runtime.current.admin_keys
        if not keys:
            return _secured(RedirectResponse("/console", status_code=303))
        try:
            form = await _form(request)
        except PrefitError:
            return _json({"error": "The form is too large."}, 413)
        if not self.auth.login_token_ok(request, form.get("csrf")):
            return await self.login_page(request, "The form expired; please try again.", 403, form.get("next"))
        if not self.auth.key_ok(keys, form.get("key", "")):
            await asyncio.sleep(_LOGIN_FAILURE_DELAY_S)
            return await self.login_page(request, "That key is not an admin key.", 401, form.get("next"))
        session = self.auth.open(form["key"])
        response = _secured(RedirectResponse(_safe_next(form.get("next")), status_code=303))
        self.auth.set_cookie(response, request, session)
        response.delete_cookie(LOGIN_COOKIE, path="/console")
        return response

    async def logout(self, request: Request, session: Session) -> Response:
        self.auth.close(session)
        target = "/console/login" if self.runtime.current.admin_keys else "/console"
        response = RedirectResponse(target, status_code=303)
        self.auth.clear_cookie(response, request)
        return response

    # -- pages --------------------------------------------------------------------------------

    async def policies_page(self, request: Request, session: Session) -> Response:
        runtime = self.runtime
        config = runtime.current.config
        policies = [
            {"policy": p, "variants": [variant_view(p, v) for v in p.variants], "layers": layer_names(p.primary)}
            for p in sorted(config.policies.values(), key=lambda p: p.name)
        ]
        return self._page(
            request,
            "policies.html",
            session=session,
            policies=policies,
            reload=runtime.reload_status,
            config=config,
        )

    async def policy_page(self, request: Request, session: Session) -> Response:
        policy = self.runtime.current.config.policies.get(request.path_params["name"])
        if policy is None:
            return self._page(request, "message.html", 404, session=session, message="No such policy.")
        sources = await anyio.to_thread.run_sync(prompt_sources, policy)
        diff = None
        a = _index(request.query_params.get("a"), len(sources), 0)
        b = _index(request.query_params.get("b"), len(sources), 1)
        if len(sources) > 1 and a != b:
            diff = prompt_diff(sources[a], sources[b])
        return self._page(
            request,
            "policy.html",
            session=session,
            policy=policy,
            variants=[variant_view(policy, v) for v in policy.variants],
            sources=sources,
            a=a,
            b=b,
            diff=diff,
        )

    async def playground_page(self, request: Request, session: Session) -> Response:
        config = self.runtime.current.config
        options = {p.name: [v.name for v in p.variants] for p in sorted(config.policies.values(), key=lambda p: p.name)}
        return self._page(
            request,
            "playground.html",
            session=session,
            options=options,
            chosen=request.query_params.get("policy", ""),
        )

    async def evals_page(self, request: Request, session: Session) -> Response:
        folder = runs_dir(self.runtime.current.config)
        runs = await anyio.to_thread.run_sync(list_runs, folder)
        return self._page(request, "evals.html", session=session, runs=runs, folder=str(folder))

    async def eval_page(self, request: Request, session: Session) -> Response:
        folder = runs_dir(self.runtime.current.config)
        run = await anyio.to_thread.run_sync(load_run, folder, request.path_params["name"])
        if run is None:
            return self._page(request, "message.html", 404, session=session, message="No such eval run.")
        chart = interval_chart(run.chart_rows, run.metrics[0] if run.metrics else "score")
        return self._page(request, "eval_run.html", session=session, run=run, chart=chart)

    async def eval_history_page(self, request: Request, session: Session) -> Response:
        folder = runs_dir(self.runtime.current.config)
        view = await anyio.to_thread.run_sync(history_view, folder, request.path_params["policy"])
        return self._page(request, "eval_history.html", session=session, view=view)

    async def eval_diff_page(self, request: Request, session: Session) -> Response:
        folder, query = runs_dir(self.runtime.current.config), request.query_params
        view = await anyio.to_thread.run_sync(diff_view, folder, query.get("a", ""), query.get("b", ""))
        if isinstance(view, str):
            return self._page(request, "message.html", 404, session=session, message=view)
        return self._page(request, "eval_diff.html", session=session, view=view)

    async def stats_page(self, request: Request, session: Session) -> Response:
        rows, since, has_cost = self.stats.window(_STATS_WINDOW_MIN)
        total = [sum(values) for values in zip(*(r.series for r in rows), strict=False)] if rows else []
        return self._page(
            request,
            "stats.html",
            session=session,
            rows=rows,
            since=since,
            has_cost=has_cost,
            samples=len(self.stats.samples),
            window=_STATS_WINDOW_MIN,
            overall=sparkline(total, 320, 48, "requests per sample"),
            spark=sparkline,
        )

    # -- playground API -----------------------------------------------------------------------

    async def _gateway_call(self, request: Request, session: Session, path: str) -> Response:
        try:
            data = orjson.loads(await read_body(request, self.runtime.current.config.settings.max_body_bytes))
            body, variant = chat_body(data)
        except (orjson.JSONDecodeError, ValueError) as exc:
            return _json({"error": str(exc)}, 400)
        except PrefitError as exc:
            return _json({"error": exc.message}, exc.status)
        reply = await self.playground.call(request, path, body, variant, session.key)
        headers = {k: v for k, v in reply.headers.items() if k.startswith("x-prefit-")}
        return _json(
            {"status": reply.status, "headers": headers, "body": reply.body, "elapsed_ms": round(reply.elapsed_ms, 1)}
        )

    async def api_render(self, request: Request, session: Session) -> Response:
        return await self._gateway_call(request, session, "/v1/render")

    async def api_send(self, request: Request, session: Session) -> Response:
        return await self._gateway_call(request, session, "/v1/chat/completions")

    # -- static files -------------------------------------------------------------------------

    async def static_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        content = self.static.get(name)
        if content is None:
            return _secured(Response(b"not found", status_code=404, media_type="text/plain"))
        if name not in _PUBLIC_STATIC:
            found = self._session(request, api=True)
            if isinstance(found, Response):
                return found
        media_type = STATIC_TYPES[PurePosixPath(name).suffix]
        return _secured(Response(content, media_type=media_type))


def _index(raw: str | None, size: int, default: int) -> int:
    if raw is not None and raw.isdigit() and int(raw) < size:
        return int(raw)
    return min(default, max(size - 1, 0))
