"""What every dcp console shares: the Jinja2 environment with gettext, the request's language,
links that keep the query (pagination, language switch, deep links), the pagination helper and
the static files.

A console is a FastAPI app (or router) whose routes call :func:`render`. Everything a page shows
is chosen by its URL — path and query string — so any page can be bookmarked, shared and reloaded
to the same content; htmx requests (``HX-Request``) get the page's fragment instead of the whole
layout, and push the same URL.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from console import i18n

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
#: The cookie that remembers the language chosen with ``?lang=``.
LANG_COOKIE = "dcp_lang"
#: Pinned htmx (from the npm registry: ``npm pack htmx.org@2.0.11``, ``dist/htmx.min.js``).
HTMX_VERSION = "2.0.11"
HTMX_SHA256 = "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"
HTMX_SM3 = "12b7362005f770a809d04bd1dba8e69ebcbe19339cd10e7a0f4686f6574d8c88"

T = TypeVar("T")


def make_environment(extra_loaders: Sequence[jinja2.BaseLoader] = ()) -> jinja2.Environment:
    """The console's template environment: autoescaped HTML, ``_()`` / ``{% trans %}`` bound to
    :mod:`console.i18n` (new-style gettext, so ``_("%(n)s jobs", n=3)`` formats and escapes)."""
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader([*extra_loaders, jinja2.FileSystemLoader(str(TEMPLATES))]),
        autoescape=jinja2.select_autoescape(["html", "svg"], default_for_string=True),
        extensions=["jinja2.ext.i18n"],
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_callables(i18n.gettext, i18n.ngettext, newstyle=True)  # type: ignore[attr-defined]
    return env


def request_locale(request: Request) -> str:
    """The language of a request: ``?lang=`` first, then the cookie, then Chinese."""
    return (
        i18n.normalize(request.query_params.get("lang"))
        or i18n.normalize(request.cookies.get(LANG_COOKIE))
        or i18n.DEFAULT_LOCALE
    )


def url_with(request: Request, path: str | None = None, **params: Any) -> str:
    """The request's URL (or ``path``) with ``params`` replaced in its query; a ``None`` or empty
    value drops the parameter. ``lang`` is dropped unless given (the cookie carries it)."""
    query = {k: v for k, v in request.query_params.items() if k != "lang"}
    for key, value in params.items():
        if value is None or value == "":
            query.pop(key, None)
        else:
            query[key] = str(value)
    base = request.url.path if path is None else path
    return base + ("?" + urlencode(query) if query else "")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: its items and where it sits (pages count from 1)."""

    items: list[T]
    number: int
    size: int
    total: int

    @property
    def pages(self) -> int:
        """How many pages the list has (at least one, even when empty)."""
        return max(1, math.ceil(self.total / self.size))

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages

    @property
    def first_index(self) -> int:
        """1-based position of the first item shown (0 when the list is empty)."""
        return 0 if not self.total else (self.number - 1) * self.size + 1

    @property
    def last_index(self) -> int:
        """1-based position of the last item shown."""
        return min(self.total, self.number * self.size)

    def window(self, radius: int = 2) -> list[int | None]:
        """Page numbers to offer: the first, the last and ``radius`` around the current one;
        ``None`` stands for a gap."""
        wanted = {1, self.pages, *range(self.number - radius, self.number + radius + 1)}
        out: list[int | None] = []
        for n in sorted(p for p in wanted if 1 <= p <= self.pages):
            if out and out[-1] is not None and n - out[-1] > 1:  # type: ignore[operator]
                out.append(None)
            out.append(n)
        return out


def paginate(items: Sequence[T], number: int | None, size: int = 20) -> Page[T]:
    """The ``number``-th page of ``size`` items (clamped into range, so a stale link still lands)."""
    if size < 1:
        raise ValueError("page size must be positive")
    total = len(items)
    pages = max(1, math.ceil(total / size))
    n = min(max(1, number or 1), pages)
    return Page(items=list(items[(n - 1) * size : n * size]), number=n, size=size, total=total)


def paginate_query(total: int, number: int | None, fetch: Callable[[int, int], list[T]], size: int = 20) -> Page[T]:
    """Like :func:`paginate` for a list that lives in a store: ``fetch(offset, limit)`` reads only
    the page shown; ``total`` is the list's length."""
    if size < 1:
        raise ValueError("page size must be positive")
    pages = max(1, math.ceil(total / size))
    n = min(max(1, number or 1), pages)
    return Page(items=fetch((n - 1) * size, size) if total else [], number=n, size=size, total=total)


@dataclass(frozen=True)
class NavItem:
    """One entry of a console's navigation: its path and its (untranslated, ``N_``-marked) label."""

    path: str
    label: str
    roles: frozenset[str] = frozenset()
    """Shown only to an officer holding one of these roles (empty: to everyone)."""

    def shown_to(self, officer: Any) -> bool:
        """Whether ``officer`` (a ``ConsoleOfficer`` or None) sees this entry."""
        return not self.roles or bool(officer is not None and self.roles & frozenset(officer.roles))


class Console:
    """One console's rendering: its template environment, its navigation and its title."""

    def __init__(self, title: str, nav: Sequence[NavItem], env: jinja2.Environment | None = None) -> None:
        self.title = title
        self.nav = list(nav)
        self.env = env or make_environment()

    def render(
        self,
        request: Request,
        template: str,
        status_code: int = 200,
        fragment: str | None = None,
        **context: Any,
    ) -> HTMLResponse:
        """Render ``template`` in the request's language. For an htmx request and a ``fragment``
        template, only the fragment. A ``?lang=`` choice is remembered in a cookie."""
        locale = request_locale(request)
        name = fragment if fragment and request.headers.get("HX-Request") == "true" else template
        with i18n.use_locale(locale):
            html = self.env.get_template(name).render(
                request=request,
                root=request.scope.get("root_path", "").rstrip("/"),
                locale=locale,
                html_lang=i18n.HTML_LANG[locale],
                console_title=self.title,
                nav=self.nav,
                url_with=lambda path=None, **p: url_with(request, path, **p),
                htmx_version=HTMX_VERSION,
                **context,
            )
        response = HTMLResponse(html, status_code=status_code)
        response.headers["Content-Language"] = i18n.HTML_LANG[locale]
        response.headers["Vary"] = "HX-Request, Cookie"
        chosen = i18n.normalize(request.query_params.get("lang"))
        if chosen:
            response.set_cookie(LANG_COOKIE, chosen, max_age=365 * 24 * 3600, httponly=True, samesite="lax")
        return response


def mount_static(app: FastAPI, path: str = "/static") -> None:
    """Serve ``console/static`` (htmx, the stylesheet) at ``path``."""
    app.mount(path, StaticFiles(directory=str(STATIC)), name="console-static")
