"""SecretFlow (PSI, vertical training, prediction) behind the engine contract.

:mod:`engines.secretflow.coordinator` is the coordinator side (ports, dispatch, follow, collect,
stragglers); the party itself is :mod:`protocols.secretflow.party`, run by the node's task service."""
