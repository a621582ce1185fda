"""SecretFlow engine: one production-mode party process per member, driven by a small runner.

* :mod:`protocols.secretflow.spec` — the pydantic job spec and results (the boundary).
* :mod:`protocols.secretflow.party` — ``python -m protocols.secretflow.party``: one party
  (stages: PSI only; PSI → train → predict; PSI → predict with stored model parts).
* :mod:`protocols.secretflow.learners` — SS-LR, SS-XGB, SGB: train, store each party's private
  model part (SPU secret shares, own split nodes), load, predict.
* :mod:`protocols.secretflow.woe` — SS-LR on WOE bins (SecretFlow's ``VertWoeBinning``) and the
  points scorecard; who learns what.
* :mod:`protocols.secretflow.split` — the key-hash train/test split and AUC/KS.
* :mod:`protocols.secretflow.runner` — :func:`run_vertical_job`: start, watch and clean up parties.
* :mod:`protocols.secretflow.synthetic` — seeded vertical data for tests, demo and bench.

Importing this package does not import SecretFlow; only the party process does.
"""
