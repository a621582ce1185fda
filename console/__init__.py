"""dcp's web console: server-rendered pages (Jinja2 + htmx, no JavaScript build), Chinese first
with English, through gettext catalogs.

* :mod:`console.web` — what every console shares: the template environment, the request's
  language, the pagination helper, the static files (htmx pinned in ``console/static``).
* :mod:`console.i18n` — the catalogs (``messages.pot``, ``zh_CN``, ``en``) and their tooling.
* :mod:`console.regulator` — the regulator's read-only console over the chain alone.
* :mod:`console.node` — the node console's pages (an officer's inbox), login left to the
  officers' work.
"""
