"""Solidity contracts (Registry, Authorizations, Receipts), their compiled artifacts and the web3.py client."""
