"""The regulator's console: read-only, from the chain alone, runnable without any node.

``python -m console.regulator --rpc URL --registry ADDR --port N`` or, in code,
:func:`create_regulator_app` over a :class:`contracts.client.ChainClient`.
"""

from console.regulator.app import create_regulator_app

__all__ = ["create_regulator_app"]
