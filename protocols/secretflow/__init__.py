"""SecretFlow engine: one production-mode party process per member, driven by a small runner.

* :mod:`protocols.secretflow.spec` — the pydantic job spec and results (the boundary).
* :mod:`protocols.secretflow.party` — ``python -m protocols.secretflow.party``: one party.
* :mod:`protocols.secretflow.runner` — :func:`run_vertical_job`: start, watch and clean up parties.
* :mod:`protocols.secretflow.synthetic` — seeded vertical data for tests, demo and bench.

Importing this package does not import SecretFlow; only the party process does.
"""
