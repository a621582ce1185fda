"""Refresh the console's catalogs: extract the strings, update every ``.po``, compile the ``.mo``.

Run from the repository root: ``python -m console.i18n``. New strings arrive in the ``.po`` files
with an empty ``msgstr``; fill them in (``tests/console/test_i18n.py`` fails until every entry is
translated) and run this again to compile.
"""

from __future__ import annotations

from babel.messages.frontend import CommandLineInterface

from console.i18n import DOMAIN, HERE, LOCALES


def main() -> int:
    root = HERE.parent.parent
    pot = HERE / f"{DOMAIN}.pot"
    run = CommandLineInterface().run
    run(["pybabel", "-q", "extract", "-F", str(HERE / "babel.cfg"), "-o", str(pot), "--no-location",
         "--sort-output", "--project", "dcp-console", "-k", "N_", str(root / "console")])
    for locale in LOCALES:
        po = HERE / locale / "LC_MESSAGES" / f"{DOMAIN}.po"
        if po.exists():
            run(["pybabel", "-q", "update", "-i", str(pot), "-d", str(HERE), "-l", locale, "-D", DOMAIN,
                 "--no-fuzzy-matching", "--ignore-obsolete"])
        else:
            run(["pybabel", "-q", "init", "-i", str(pot), "-d", str(HERE), "-l", locale, "-D", DOMAIN])
    run(["pybabel", "-q", "compile", "-d", str(HERE), "-D", DOMAIN])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
