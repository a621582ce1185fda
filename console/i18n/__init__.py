"""The console's languages: gettext catalogs compiled by Babel, Chinese (zh_CN) by default.

The catalogs live next to this file: ``messages.pot`` (extracted from ``console/**.py`` and the
templates, see ``babel.cfg``), ``<locale>/LC_MESSAGES/messages.po`` (the translations) and the
compiled ``messages.mo``. The ``.mo`` files are committed, like the contracts' artifacts: the console
then runs from a fresh clone (or an installed wheel) with no build step, and
``tests/console/test_i18n.py`` recompiles every ``.po`` and fails when a ``.mo`` has drifted.
``python -m console.i18n`` re-extracts, updates the ``.po`` files and recompiles.

The language of the request being rendered is a context variable: :func:`use_locale` sets it, and
:func:`gettext` / :func:`ngettext` (the callables the templates' ``_()`` resolve to) read it, so
rendering two requests in two languages at once cannot mix them.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from babel.support import NullTranslations, Translations

HERE = Path(__file__).resolve().parent
DOMAIN = "messages"
#: The console's languages, the default first.
LOCALES: tuple[str, ...] = ("zh_CN", "en")
DEFAULT_LOCALE = "zh_CN"
#: The value of an HTML ``lang`` attribute for each locale.
HTML_LANG = {"zh_CN": "zh-CN", "en": "en"}

_current: contextvars.ContextVar[str] = contextvars.ContextVar("console_locale", default=DEFAULT_LOCALE)


def normalize(lang: str | None) -> str | None:
    """The console locale ``lang`` names (``zh``, ``zh-CN``, ``zh_cn``, ``en-US`` …), or None."""
    if not lang:
        return None
    key = lang.strip().replace("-", "_").lower()
    if key in ("zh", "zh_cn", "zh_hans", "zh_hans_cn"):
        return "zh_CN"
    if key == "en" or key.startswith("en_"):
        return "en"
    return None


@functools.cache
def translations(locale: str) -> NullTranslations:
    """The compiled catalog of ``locale`` (loaded once)."""
    if locale not in LOCALES:
        raise ValueError(f"unknown console locale {locale!r}; known: {', '.join(LOCALES)}")
    return Translations.load(str(HERE), [locale], DOMAIN)


def current_locale() -> str:
    """The locale of the request being rendered."""
    return _current.get()


@contextmanager
def use_locale(locale: str) -> Iterator[None]:
    """Render (and translate) in ``locale`` inside the block."""
    token = _current.set(locale)
    try:
        yield
    finally:
        _current.reset(token)


def gettext(message: str) -> str:
    """``message`` in the current locale."""
    return translations(_current.get()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The singular or plural of a message in the current locale."""
    return translations(_current.get()).ngettext(singular, plural, n)


_ = gettext


def N_(message: str) -> str:  # noqa: N802 - the gettext convention for "mark, translate later"
    """Mark ``message`` for extraction without translating it now (translated when rendered)."""
    return message
