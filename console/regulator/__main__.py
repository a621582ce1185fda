"""``python -m console.regulator --rpc URL --registry ADDR [--port N] [--host H]``: serve the
regulator's read-only console over the chain at ``URL`` (no node needed)."""

from __future__ import annotations

import argparse

import uvicorn
from web3 import HTTPProvider, Web3

from console.regulator import create_regulator_app
from contracts.client import ChainClient


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m console.regulator", description=__doc__)
    parser.add_argument("--rpc", required=True, help="the chain's JSON-RPC URL")
    parser.add_argument("--registry", required=True, help="the Registry contract's address")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8600, help="port to listen on (default 8600)")
    parser.add_argument("--tz", default="Asia/Shanghai", help="time zone of shown times (default Asia/Shanghai)")
    parser.add_argument("--page-size", type=int, default=20, help="rows per list page (default 20)")
    args = parser.parse_args(argv)
    w3 = Web3(HTTPProvider(args.rpc, request_kwargs={"timeout": 30}))
    if not w3.is_connected():
        parser.error(f"no chain answers at {args.rpc}")
    chain = ChainClient.connect(w3, args.registry)
    app = create_regulator_app(chain, tz=args.tz, page_size=args.page_size)
    print(f"regulator console: http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
