"""The operator's launcher: ``dcp up`` / ``dcp down`` of a whole federation (chain, contracts, governance,
keys and certificates, officers, nodes, coordinator) on one machine, and the clients that reach it.

It stands above the services: it imports the coordinator's and the nodes' packages to set them up, and
neither of them imports it."""
