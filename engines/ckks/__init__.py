"""CKKS on TenSEAL (``he_score``, ``secure_stats``) behind the engine contract.

:mod:`engines.ckks.coordinator` is the coordinator side (relay bytes, sum ciphertexts); the protocol
is :mod:`protocols.he`."""
