"""The node side of the SecretFlow engine (``engines.secretflow``): its steps on the node's one step route.

* :mod:`nodes.secretflow.engine` — :class:`~nodes.secretflow.engine.SecretFlowNode`, the
  ``engines.base.NodeEngine``: the ``ports`` and ``start`` steps, stop, recovery after a restart;
* :mod:`nodes.secretflow.plan` — what a task may run here (the approved slice, the stages, the model part);
* :mod:`nodes.secretflow.run` — one party from its extract to its sealed outputs (extract, run, collect);
* :mod:`nodes.secretflow.processes` — spawning and stopping party processes, the warm party.
"""
