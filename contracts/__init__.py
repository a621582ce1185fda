"""Solidity contracts (Registry, Authorizations, Receipts), their compiled artifacts and the web3.py client.

Layout:

* ``src/`` — Solidity 0.8 sources: ``Registry.sol`` (members with SM2/BLS keys, governors with a
  threshold, datasets), ``Authorizations.sol`` (approvals of exact terms, or one BLS12-381
  aggregate verified with the EIP-2537 precompiles), ``Receipts.sol`` (usage receipts, audit
  anchors), ``Bls12381.sol`` (hash-to-G2, FastAggregateVerify, PoP) and ``testing/`` fixtures
  (a harness for the BLS library; deliberately dishonest contracts for the audit tests).
* ``artifacts/`` — committed ABI + bytecode from the pinned npm ``solc`` (``compile.mjs``,
  ``python -m contracts.build [--check]``); a test recompiles and fails on drift.
* ``client.py`` — :class:`contracts.client.ChainClient`: deploy, typed calls, custom errors as
  the named classes of ``errors.py``, events paged by block range into pydantic models
  (``models.py``).
* ``anvil.py`` / ``backends.py`` — a real anvil on a free port, or in-process py-evm.
* ``audit.py`` — the regulator's chain-only audit (``dcp audit``); ``besu.py`` — Besu
  local-permissioning allowlists (``dcp chain besu-permissions``).

Approvals sign ``Authorizations.approvalDigest(terms)`` (:func:`contracts.client.approval_digest`),
which binds chain id, contract, job id, manifest hash, datasets, requester, expiry and maximum
runs; the same 32 bytes are the message of the BLS aggregate.
"""
