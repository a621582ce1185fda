"""``python -m coordinator --config coordinator.yaml``: run the coordinator service."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Run uvicorn on the configured loopback address until stopped."""
    import uvicorn

    from common.logging import configure_logging
    from coordinator.app import create_app
    from coordinator.errors import CoordinatorError
    from coordinator.settings import load_coordinator_settings

    ap = argparse.ArgumentParser(prog="python -m coordinator")
    ap.add_argument("--config", type=Path, default=None)
    args = ap.parse_args(argv)
    configure_logging("INFO")
    try:
        settings = load_coordinator_settings(args.config)
        app = create_app(settings)
    except CoordinatorError as exc:
        print(f"{exc.name}: {exc.detail}", file=sys.stderr)
        return 2
    print(f"coordinator on http://{settings.host}:{settings.port}", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
