"""The engines: every computation the platform runs, behind one small contract (:mod:`engines.base`).

An engine is an addition, not a parallel path: the coordinator runs every job kind through
:class:`engines.base.Engine` and the registry (:mod:`engines.registry`). This package imports only
``protocols/`` and ``common/``; the coordinator hands an engine what it needs through the typed port
:class:`engines.base.JobContext`.
"""
