"""The console's catalogs: no visible word in a template escapes gettext, every string the code and
templates use is in the catalog, every entry of every language is translated (placeholders intact),
and the committed ``.mo`` files are the compiled ``.po`` files."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from console import i18n
from console.web import HERE as CONSOLE
from console.web import TEMPLATES

#: Attributes a person sees or hears (screen readers read aria-label, title, alt, placeholder).
VISIBLE_ATTRS = {"title", "alt", "aria-label", "placeholder", "aria-description", "aria-roledescription"}
_JINJA = re.compile(r"\{#.*?#\}|\{%.*?%\}|\{\{.*?\}\}", re.S)
#: A Jinja expression that prints a bare string literal with a word in it: ``{{ "Hello" }}``.
_PRINTED_LITERAL = re.compile(r"\{\{-?\s*(['\"])([^'\"]*[^\W\d_][^'\"]*)\1\s*-?\}\}")


class _VisibleText(HTMLParser):
    """Collects words a reader would see in HTML, except inside script/style and inside an element
    that declares its own ``lang`` (a language's name written in that language, e.g. 中文 / English)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[int, str]] = []
        self._stack: list[tuple[str, bool]] = []

    def _exempt(self) -> bool:
        return any(skip for _, skip in self._stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        for name, value in attrs:
            if name in VISIBLE_ATTRS and value and _has_word(value) and "lang" not in names:
                self.found.append((self.getpos()[0], f'{name}="{value}"'))
        if tag not in {"br", "img", "input", "meta", "link", "hr", "col", "source", "wbr"}:
            self._stack.append((tag, tag in ("script", "style") or "lang" in names and tag != "html"))

    def handle_endtag(self, tag: str) -> None:
        while self._stack:
            if self._stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if not self._exempt() and _has_word(data):
            self.found.append((self.getpos()[0], data.strip()))


def _has_word(text: str) -> bool:
    return any(ch.isalpha() for ch in text)


def untranslated_strings(source: str) -> list[tuple[int, str]]:
    """(line, text) of every visible string in a template that does not go through gettext."""
    found = [(source[: m.start()].count("\n") + 1, m.group(2)) for m in _PRINTED_LITERAL.finditer(source)]
    # keep line numbers: each Jinja tag becomes as many newlines as it spanned
    stripped = _JINJA.sub(lambda m: "\n" * m.group(0).count("\n"), source)
    parser = _VisibleText()
    parser.feed(stripped)
    parser.close()
    return found + parser.found


def templates() -> list[Path]:
    return sorted(TEMPLATES.rglob("*.html"))


def test_the_checker_catches_hard_coded_text() -> None:
    assert untranslated_strings("<p>Hello</p>") == [(1, "Hello")]
    assert untranslated_strings('<p>\n<input aria-label="Name"></p>') == [(2, 'aria-label="Name"')]
    assert untranslated_strings("<td>{{ 'Approved' }}</td>") == [(1, "Approved")]
    assert untranslated_strings("<p>{{ _('Hello') }} · {{ n }} …</p>") == []
    assert untranslated_strings('<a lang="en" hreflang="en">English</a><script>var x="y"</script>') == []
    assert untranslated_strings("<p>待处理</p>") == [(1, "待处理")]


@pytest.mark.parametrize("path", templates(), ids=lambda p: str(p.relative_to(TEMPLATES)))
def test_template_has_no_string_outside_the_catalog(path: Path) -> None:
    bad = untranslated_strings(path.read_text(encoding="utf-8"))
    assert not bad, f"{path.name}: visible text not passed through _(): " + "; ".join(
        f"line {line}: {text!r}" for line, text in bad)


def _extracted() -> set[str | tuple[str, ...]]:
    with open(i18n.HERE / "babel.cfg", encoding="utf-8") as f:
        method_map, options_map = parse_mapping_cfg(f)
    out: set[str | tuple[str, ...]] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(CONSOLE), method_map, options_map, keywords=DEFAULT_KEYWORDS
    ):
        out.add(message if isinstance(message, str) else tuple(message))
    return out


def _catalog(path: Path, locale: str | None = None) -> Catalog:
    with open(path, "rb") as f:
        return read_po(f, locale=locale)


def _key(value: str | tuple[str, ...] | list[str]) -> str | tuple[str, ...]:
    return value if isinstance(value, str) else tuple(value)


def _ids(cat: Catalog) -> set[str | tuple[str, ...]]:
    return {m.id if isinstance(m.id, str) else tuple(m.id) for m in cat if m.id}


def test_every_string_used_is_in_the_template_catalog() -> None:
    used = _extracted()
    pot = _ids(_catalog(i18n.HERE / "messages.pot"))
    assert used, "extraction found nothing: babel.cfg is wrong"
    missing = used - pot
    assert not missing, f"run `python -m console.i18n`: not in messages.pot: {sorted(map(str, missing))}"
    stale = pot - used
    assert not stale, f"run `python -m console.i18n`: messages.pot has unused entries: {sorted(map(str, stale))}"


@pytest.mark.parametrize("locale", i18n.LOCALES)
def test_every_entry_is_translated(locale: str) -> None:
    po = _catalog(i18n.HERE / locale / "LC_MESSAGES" / "messages.po", locale)
    pot = _ids(_catalog(i18n.HERE / "messages.pot"))
    assert _ids(po) == pot, f"{locale}: catalog differs from messages.pot; run `python -m console.i18n`"
    untranslated = [m.id for m in po if m.id and (
        "fuzzy" in m.flags or not (m.string if isinstance(m.string, str) else all(m.string)))]
    assert not untranslated, f"{locale}: untranslated or fuzzy: {untranslated}"
    problems = [(m.id, [str(e) for e in errs]) for m, errs in po.check() if errs]
    assert not problems, f"{locale}: placeholders differ: {problems}"


@pytest.mark.parametrize("locale", i18n.LOCALES)
def test_committed_mo_is_the_compiled_po(locale: str) -> None:
    folder = i18n.HERE / locale / "LC_MESSAGES"
    po = _catalog(folder / "messages.po", locale)
    with open(folder / "messages.mo", "rb") as f:
        mo = read_mo(f)
    want = {_key(m.id): _key(m.string) for m in po if m.id}
    got = {_key(m.id): _key(m.string) for m in mo if m.id}
    assert got == want, f"{locale}: messages.mo is stale; run `python -m console.i18n`"


def test_chinese_is_the_default_and_each_locale_translates() -> None:
    assert i18n.current_locale() == "zh_CN"
    assert i18n.gettext("Receipts") == "回执"
    with i18n.use_locale("en"):
        assert i18n.gettext("Receipts") == "Receipts"
        assert i18n.ngettext("%(num)s receipt", "%(num)s receipts", 2) % {"num": 2} == "2 receipts"
    assert i18n.ngettext("%(num)s receipt", "%(num)s receipts", 2) % {"num": 2} == "2 条回执"
    assert [i18n.normalize(x) for x in ("zh-CN", "zh", "en-US", "EN", "fr", None)] == [
        "zh_CN", "zh_CN", "en", "en", None, None]
