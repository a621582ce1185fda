"""Two chain backends behind one small interface, so the same tests run on both:

* :class:`EthTesterBackend` — py-evm in process through eth-tester (Prague VM, EIP-2537
  precompiles implemented with py_ecc): fast to start, slower per pairing.
* :class:`AnvilBackend` — a real ``anvil`` node on a free port (see :mod:`contracts.anvil`).

Both expose ``w3``, funded unlocked ``accounts``, ``now()`` (latest block time) and
``advance_time(seconds)``.
"""

from __future__ import annotations

from types import TracebackType

from web3 import Web3

from contracts.anvil import AnvilNode
from contracts.errors import AnvilError, InvalidInput


class ChainBackend:
    """Common interface of the backends."""

    name: str = "abstract"
    w3: Web3
    accounts: list[str]

    def now(self) -> int:
        """Timestamp of the latest block."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def advance_time(self, seconds: int) -> None:
        """Move chain time forward by ``seconds`` and mine a block."""
        raise NotImplementedError

    def snapshot(self) -> object:
        """Remember the chain state; :meth:`revert` returns to it (once)."""
        raise NotImplementedError

    def revert(self, snapshot: object) -> None:
        """Return to a state remembered by :meth:`snapshot`."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the backend (stop processes)."""

    def __enter__(self) -> ChainBackend:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class EthTesterBackend(ChainBackend):
    """In-process py-evm (eth-tester), Prague rules."""

    name = "eth_tester"

    def __init__(self, accounts: int = 20) -> None:
        from eth_tester import EthereumTester, PyEVMBackend
        from web3 import EthereumTesterProvider

        genesis = PyEVMBackend.generate_genesis_state(num_accounts=accounts)
        self.tester = EthereumTester(backend=PyEVMBackend(genesis_state=genesis))
        self.w3 = Web3(EthereumTesterProvider(self.tester))
        self.accounts = list(self.w3.eth.accounts)

    def advance_time(self, seconds: int) -> None:
        """Time-travel the pending block and mine it."""
        self.tester.time_travel(self.now() + int(seconds))
        self.tester.mine_blocks(1)

    def snapshot(self) -> object:
        """eth-tester snapshot id."""
        return self.tester.take_snapshot()

    def revert(self, snapshot: object) -> None:
        """Revert to the snapshot."""
        self.tester.revert_to_snapshot(snapshot)


class AnvilBackend(ChainBackend):
    """A real anvil node (started here, stopped by :meth:`close`)."""

    name = "anvil"

    def __init__(self, accounts: int = 20, node: AnvilNode | None = None) -> None:
        self.node = node or AnvilNode(accounts=accounts)
        self.node.start()
        self.w3 = self.node.web3()
        self.accounts = list(self.w3.eth.accounts)

    def advance_time(self, seconds: int) -> None:
        """``evm_increaseTime`` then ``evm_mine``."""
        self.w3.provider.make_request("evm_increaseTime", [int(seconds)])
        self.w3.provider.make_request("evm_mine", [])

    def snapshot(self) -> object:
        """``evm_snapshot``."""
        return self.w3.provider.make_request("evm_snapshot", [])["result"]

    def revert(self, snapshot: object) -> None:
        """``evm_revert``; :class:`AnvilError` if anvil refuses."""
        if not self.w3.provider.make_request("evm_revert", [snapshot]).get("result"):
            raise AnvilError(f"anvil could not revert to snapshot {snapshot}")

    def close(self) -> None:
        self.node.stop()


def open_backend(name: str, accounts: int = 20) -> ChainBackend:
    """``"eth_tester"`` or ``"anvil"``."""
    if name == "eth_tester":
        return EthTesterBackend(accounts=accounts)
    if name == "anvil":
        return AnvilBackend(accounts=accounts)
    raise InvalidInput(f"unknown backend {name!r} (eth_tester or anvil)")
