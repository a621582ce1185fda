"""The researcher sandbox (数据沙盒): the dcp high side of PySyft's low-side / high-side split.

* :mod:`protocols.sandbox.isolate` — run approved code (SM3-checked) on private data in bubblewrap
  with prlimit limits; every refusal is a named :mod:`protocols.sandbox.errors` exception.
* :mod:`protocols.sandbox.output_policy` — what of a result may be released (aggregates only).
* :mod:`protocols.sandbox.lowside` — the PySyft 0.9.5 datasite holding mock data only; runs in its own
  venv (``.venv-syft``) and is driven from dcp through :mod:`protocols.sandbox.lowside_client`.
"""
