"""SecretFlow (PSI, vertical training, prediction) behind the engine contract.

:mod:`engines.secretflow.coordinator` is the coordinator side (ports, dispatch, follow, collect,
stragglers); :mod:`engines.secretflow.steps` the node steps' typed bodies. The node side (the
``NodeEngine`` running those steps) is ``nodes.secretflow``; the party itself is
:mod:`protocols.secretflow.party`."""
